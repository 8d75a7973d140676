"""Another upstream's context-length error, worded as Anthropic words it.

Claude Code (and other Anthropic clients) recover from a prompt over the context window
by compacting the conversation, and they recognise that error by Anthropic's wording:
``prompt is too long: 210000 tokens > 200000 maximum`` (400 ``invalid_request_error``).
An OpenAI-compatible or Gemini upstream says the same thing in its own words; relayed
as it came, the agent would stop with an error instead of compacting. So an error an
Anthropic client gets is reworded when it is recognisably a context-length error:

========================================  ==========================================
upstream says                             Anthropic client gets
========================================  ==========================================
OpenAI ``code: context_length_exceeded``  ``prompt is too long: N tokens > M maximum``
"maximum context length is M tokens ...   (N and M from the message when it names
resulted in / requested N tokens"         them, else ``prompt is too long: <theirs>``)
Gemini "input token count (N) exceeds
the maximum number of tokens allowed (M)"
========================================  ==========================================
"""

from __future__ import annotations

import re

from ...events import Error, GatewayError

_LIMIT_FIRST = re.compile(
    r"maximum context length is (\d+) tokens.*?(?:resulted in|requested|contains?) (\d+)", re.S
)
_COUNT_FIRST = re.compile(
    r"input token count \(?(\d+)\)? exceeds the maximum number of tokens allowed \(?(\d+)", re.S
)
_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "context window",
    "exceeds the maximum number of tokens",
    "too many tokens",
)
_ANTHROPIC = "prompt is too long"


def context_message(code: str | None, message: str) -> str | None:
    """Anthropic's wording of a context-length error, or ``None`` if it is not one."""
    if message.startswith(_ANTHROPIC):
        return None  # already Anthropic's
    lowered = message.lower()
    if code != "context_length_exceeded" and not any(m in lowered for m in _MARKERS):
        return None
    found = _LIMIT_FIRST.search(message)
    if found is not None:
        limit, count = found.group(1), found.group(2)
        return f"{_ANTHROPIC}: {count} tokens > {limit} maximum"
    found = _COUNT_FIRST.search(message)
    if found is not None:
        return f"{_ANTHROPIC}: {found.group(1)} tokens > {found.group(2)} maximum"
    return f"{_ANTHROPIC}: {message}"


def as_anthropic(error: GatewayError) -> GatewayError:
    """``error``, reworded if it is another upstream's context-length error."""
    if error.status not in (400, 413, 422):
        return error
    worded = context_message(error.code, error.message)
    if worded is None:
        return error
    return GatewayError("invalid_request", worded, status=400, code="invalid_request_error")


def as_anthropic_event(error: Error) -> Error:
    """The in-stream counterpart of ``as_anthropic``."""
    worded = context_message(error.code, error.message) if error.status in (400, 413) else None
    if worded is None:
        return error
    return Error("invalid_request", worded, 400, "invalid_request_error")
