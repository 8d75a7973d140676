"""The model-name grammar: what a request asks the fake upstream to do.

::

    model    = base [ "?" options ]
    base     = "echo" | "gen/" N | "replay/" PROVIDER "/" STEM | "tools" | "think"
    options  = key "=" value *( "&" key "=" value )      (query-string syntax)

Generated scenarios (``tokenrelay.fake.scenes``), each in the route's wire format:

- ``echo``: the last user message (as read from the route's format), word by word;
- ``gen/N``: ``tok0 `` ... ``tok{N-1} ``;
- ``tools``: the last user message names tool calls, one per line ``/call NAME {json}``
  (text before the first such line is streamed first); every call is streamed, in
  parallel (OpenAI ``tool_calls`` fragments, Anthropic ``tool_use`` blocks with
  ``input_json_delta``, Gemini ``functionCall`` parts, the first one carrying the
  ``thoughtSignature`` ``base64("sig:NAME JSON")``), and the turn ends for tool use. A NAME the request does not
  offer among its tools is a 400, so a stream proves the tools were translated;
- ``think``: reasoning ``Reasoning about: <last user message>`` (OpenAI
  ``reasoning_content`` deltas; an Anthropic ``thinking`` block closed by a
  ``signature_delta``; Gemini ``thought`` parts, the signature on the first answer
  part), with the signature ``base64("sig:" + reasoning)``, then the echo.

Options (all optional; event indexes count every SSE event the stream would carry,
starting at 0, including role/usage chunks, ``ping`` and ``[DONE]``):

========================  ==================================================================
``ttft=S``                seconds before the first event (non-streaming: before the body)
``head_after=S``          seconds before the response's status line and headers (3600:
                          an upstream that never answers); ``ttft`` counts after them
``gap=S``                 seconds between events
``drop_after=K``          send K events, then close the TCP connection without the chunked
                          terminator (non-streaming: half the body, then close)
``stall_after=K``         send K events, then nothing; the connection stays open until the
                          client closes it (non-streaming: no response at all)
``error_after=K``         send K events, then an in-band error event in the route's format,
                          then end the response cleanly
``malformed_at=K``        event K's data is ``{"broken`` (not JSON)
``bad_utf8_at=K``         event K carries invalid UTF-8 bytes inside a JSON string
``no_done=1``             end cleanly without the terminator (``[DONE]``, ``message_stop``;
                          Gemini: no ``finishReason``; replay: the last event is left out)
``status=C``              respond with HTTP status C and an error body instead of a stream
``retry_after=V``         with ``status``: send ``Retry-After: V``
``body=TEXT``             with ``status``: this body (URL-encoded in the model name)
``fail_times=N``          with ``status`` (default 500): only the first N requests carrying
                          this exact model string fail; later ones succeed
``fail_rate=P``           with ``status`` (default 500): a fraction P (0..1) of the requests
                          carrying this exact model string fail, spread evenly and
                          deterministically (request k fails when ``floor(k*P)`` steps up:
                          0.3 fails the 4th, 7th, 10th, ...). ``POST /_fake/heal`` makes
                          every failing option succeed until ``POST /_fake/break`` or a reset
``limit=1``               honour the request's max tokens (``max_completion_tokens`` /
                          ``max_tokens``, ``max_tokens``, ``maxOutputTokens``): at most
                          that many text chunks, then the length stop (``length``,
                          ``max_tokens``, ``MAX_TOKENS``); and its stop sequences
                          (``stop``, ``stop_sequences``, ``stopSequences``): the text
                          ends before the first one (Anthropic: ``stop_sequence``)
``interleave=1``          ``tools`` on the OpenAI route: the calls' fragments interleave
                          (index 0, 1, 0, 1, ...), as the wire allows
``no_usage=1``            ``echo`` and ``gen/N`` streams report no token counts (no usage
                          chunk, ``usage`` or ``usageMetadata``): an upstream that counts
                          nothing
``too_long=1``            answer 400 with the route's context-length error, worded as the
                          provider words it (``counting.py``)
``cache=1``               ``echo`` and ``gen/N`` act as the provider's prompt cache, per
                          upstream key: a prefix seen before is reported as cached, in
                          the route's own fields, Anthropic's writes in its
                          ``cache_control`` shape (``prefix_cache.py``)
========================  ==================================================================
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

__all__ = ["MAX_EVENTS", "Script", "ScriptError", "parse_model"]

MAX_EVENTS = 100_000
"""Upper bound on ``gen/N`` (keeps a typo from allocating gigabytes)."""

_MAX_SECONDS = 3600.0
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_HEADER_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")

Kind = Literal["echo", "gen", "replay", "tools", "think"]


class ScriptError(ValueError):
    """The model name cannot be served; ``status`` is 404 (unknown model) or 400."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class Script:
    """A parsed model name. ``model`` is the full string as the client sent it."""

    model: str
    kind: Kind
    n: int = 0
    provider: str = ""
    stem: str = ""
    ttft: float = 0.0
    head_after: float = 0.0
    gap: float = 0.0
    drop_after: int | None = None
    stall_after: int | None = None
    error_after: int | None = None
    malformed_at: int | None = None
    bad_utf8_at: int | None = None
    no_done: bool = False
    status: int | None = None
    retry_after: str | None = None
    body: str | None = None
    fail_times: int | None = None
    fail_rate: float | None = None
    limit: bool = False
    interleave: bool = False
    no_usage: bool = False
    too_long: bool = False
    cache: bool = False

    @property
    def fails(self) -> bool:
        """Whether this script answers with an error status (before ``fail_times``)."""
        return self.status is not None or self.fail_times is not None or bool(self.fail_rate)

    def fails_at(self, count: int) -> bool:
        """Whether the ``count``-th request (from 1) carrying this model string fails."""
        if self.fail_rate is not None:
            return math.floor(count * self.fail_rate) > math.floor((count - 1) * self.fail_rate)
        return self.fail_times is None or count <= self.fail_times


def _int(key: str, value: str, low: int = 0, high: int = 10**9) -> int:
    if not value.isdigit():
        raise ScriptError(f"option {key}={value!r}: expected a non-negative integer")
    number = int(value)
    if not low <= number <= high:
        raise ScriptError(f"option {key}={value}: must be between {low} and {high}")
    return number


def _seconds(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ScriptError(f"option {key}={value!r}: expected seconds") from None
    if not (math.isfinite(number) and 0.0 <= number <= _MAX_SECONDS):
        raise ScriptError(f"option {key}={value}: must be between 0 and {_MAX_SECONDS:g}")
    return number


def _flag(key: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", ""):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise ScriptError(f"option {key}={value!r}: expected 1 or 0")


_INT_OPTIONS = ("drop_after", "stall_after", "error_after", "malformed_at", "bad_utf8_at")


def parse_model(model: str) -> Script:
    """Parse a model name; raises ``ScriptError`` (status 404 for an unknown base)."""
    base, _, query = model.partition("?")
    fields: dict[str, Any] = {}
    if base in ("echo", "tools", "think"):
        fields["kind"] = base
    elif base.startswith("gen/"):
        fields["kind"] = "gen"
        fields["n"] = _int("gen", base[4:], 0, MAX_EVENTS)
    elif base.startswith("replay/"):
        parts = base[7:].split("/")
        if len(parts) != 2 or not all(_NAME.fullmatch(p) and p[0] != "." for p in parts):
            raise ScriptError(f"model {base!r}: expected replay/<provider>/<file-stem>", 404)
        fields.update(kind="replay", provider=parts[0], stem=parts[1])
    else:
        raise ScriptError(
            f"The model {model!r} does not exist on the fake upstream: use echo, gen/<n>, "
            "tools, think or replay/<provider>/<file-stem>, optionally followed by ?options",
            404,
        )
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ScriptError(f"model {model!r}: options must be key=value&key=value") from None
    for key, value in pairs:
        if key in fields:
            raise ScriptError(f"option {key} given twice")
        if key in ("ttft", "gap", "head_after"):
            fields[key] = _seconds(key, value)
        elif key in _INT_OPTIONS:
            fields[key] = _int(key, value)
        elif key == "fail_times":
            fields[key] = _int(key, value, 0)
        elif key == "fail_rate":
            try:
                rate = float(value)
            except ValueError:
                rate = -1.0
            if not 0.0 <= rate <= 1.0:
                raise ScriptError(f"option fail_rate={value!r}: expected a number from 0 to 1")
            fields[key] = rate
        elif key == "status":
            fields[key] = _int(key, value, 200, 599)
        elif key in ("no_done", "limit", "interleave", "no_usage", "too_long", "cache"):
            fields[key] = _flag(key, value)
        elif key == "retry_after":
            if not _HEADER_VALUE.fullmatch(value):
                raise ScriptError(f"option retry_after={value!r}: not a valid header value")
            fields[key] = value
        elif key == "body":
            fields[key] = value
        else:
            raise ScriptError(f"unknown option {key!r} in model {model!r}")
    return Script(model=model, **fields)
