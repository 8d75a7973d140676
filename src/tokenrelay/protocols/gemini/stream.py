"""Gemini ``streamGenerateContent?alt=sse`` frames -> canonical events.

Each frame is a whole ``GenerateContentResponse``: ``candidates[].content.parts`` carry
the new text, thought summaries (``thought: true``) and function calls, each call whole
in one part; ``usageMetadata`` repeats the running totals on every frame; the stream has
no terminator and simply ends after the frame carrying ``finishReason``.

Thought signatures (opaque, must come back unchanged on the next turn) are kept where
the canon has a slot for them:

- on a ``functionCall`` part -> ``ToolCallDelta.signature`` of that call;
- on a text or thought part -> ``ReasoningDelta(signature=...)``, emitted before the
  text it came with. The fold keeps it as the choice's reasoning signature, and
  ``gemini.encode_request`` puts it back on the first answer text part of that turn.
  The fold concatenates signature fragments, so only the first text/thought signature
  of a choice is emitted; a later one is dropped (Gemini sends at most one per answer).
"""

from __future__ import annotations

import secrets
from typing import Any

import msgspec

from ...events import (
    Error,
    Event,
    Finish,
    ReasoningDelta,
    Start,
    TextDelta,
    ToolCallDelta,
    Usage,
    kind_for_status,
)
from ...sse import ServerSentEvent
from ..base import MALFORMED, TRUNCATED

__all__ = [
    "FINISH_FROM_WIRE",
    "MALFORMED",
    "TRUNCATED",
    "GeminiStreamDecoder",
    "error_from_wire",
    "usage_from_wire",
]

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.decode

# Candidate.finishReason -> canonical reason. STOP becomes "tool_calls" when the choice
# made function calls. A reason not listed here maps to "error": every reason Google has
# added since STOP/MAX_TOKENS names a failure or a filter.
FINISH_FROM_WIRE: dict[str, str] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MODEL_ARMOR": "content_filter",
    "LANGUAGE": "error",
    "OTHER": "error",
    "IMAGE_OTHER": "error",
    "NO_IMAGE": "error",
    "MALFORMED_FUNCTION_CALL": "error",
    "UNEXPECTED_TOOL_CALL": "error",
    "TOO_MANY_TOOL_CALLS": "error",
    "MISSING_THOUGHT_SIGNATURE": "error",
    "FINISH_REASON_UNSPECIFIED": "error",
}


def usage_from_wire(raw: dict[str, Any]) -> Usage:
    """``usageMetadata`` -> ``Usage``. Gemini counts thoughts apart from the answer
    (``thoughtsTokenCount``); the canon counts them inside ``output``."""
    thoughts = _count(raw, "thoughtsTokenCount")
    return Usage(
        input=_count(raw, "promptTokenCount"),
        output=_count(raw, "candidatesTokenCount") + thoughts,
        cached=_count(raw, "cachedContentTokenCount"),
        reasoning=thoughts,
    )


def _count(raw: dict[str, Any], key: str) -> int:
    value = raw.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def error_from_wire(raw: Any) -> tuple[str, int | None, str | None]:
    """The ``message``, HTTP ``code`` and ``status`` word of a Google error object
    ``{"code": 429, "message": "...", "status": "RESOURCE_EXHAUSTED"}``."""
    if not isinstance(raw, dict):
        return (str(raw) if raw else "", None, None)
    code = raw.get("code")
    status = raw.get("status")
    return (
        str(raw.get("message") or ""),
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        status if isinstance(status, str) and status else None,
    )


def _stream_error(raw: Any) -> Error:
    message, code, status = error_from_wire(raw)
    kind = kind_for_status(code) if code is not None else "upstream"
    return Error(
        kind,
        message or "the upstream reported an error",
        code if code is not None and 400 <= code < 600 else 502,
        status,
    )


class _Choice:
    """Per-candidate state: calls seen (the next call index), finish, signature."""

    __slots__ = ("calls", "finished", "signed")

    def __init__(self) -> None:
        self.calls = 0
        self.finished = False
        self.signed = False


class GeminiStreamDecoder:
    """Upstream Gemini frames -> canonical events.

    Every frame repeats the running totals: the first ``usageMetadata`` is emitted at
    once as a partial ``Usage`` (the input count, known before the answer); the one of
    the frame that finishes the last choice as final (a cut after it loses nothing);
    a later one by :meth:`close` (or just before an error), partial if the answer did
    not end whole.
    """

    __slots__ = ("_choices", "_ended", "_reported", "_started", "_usage")

    def __init__(self) -> None:
        self._started = False
        self._ended = False
        self._usage: Usage | None = None
        self._reported: Usage | None = None  # the last of ``_usage`` emitted
        self._choices: dict[int, _Choice] = {}

    def feed(self, frame: ServerSentEvent) -> list[Event]:
        if self._ended or not frame.data.strip():
            return []
        try:
            chunk = _json_decode(frame.data)
        except msgspec.DecodeError:
            return self._fail(MALFORMED)
        if isinstance(chunk, list):  # the JSON-array form (no alt=sse) of the same stream
            out: list[Event] = []
            for item in chunk:
                out.extend(self._chunk(item))
            return out
        return self._chunk(chunk)

    def close(self) -> list[Event]:
        """End of the body. Gemini has no terminator: a choice without ``finishReason``
        (or no choice at all) means the stream was cut."""
        if self._ended:
            return []
        return self._fail(None if self.done else TRUNCATED)

    @property
    def done(self) -> bool:
        """Every choice has its ``finishReason`` (Gemini has no end marker)."""
        return bool(self._choices) and all(c.finished for c in self._choices.values())

    def _fail(self, error: Error | None) -> list[Event]:
        self._ended = True
        usage = self._usage
        out: list[Event] = []
        if usage is not None and usage is not self._reported:
            usage.partial = error is not None  # counts of an answer that did not end whole
            out.append(usage)
        if error is not None:
            out.append(error)
        return out

    def _chunk(self, chunk: Any) -> list[Event]:
        if self._ended:
            return []
        if not isinstance(chunk, dict):
            return self._fail(MALFORMED)
        if chunk.get("error") is not None:
            return self._fail(_stream_error(chunk["error"]))
        out: list[Event] = []
        if not self._started:
            self._started = True
            response_id = chunk.get("responseId")
            out.append(
                Start(
                    response_id
                    if isinstance(response_id, str) and response_id
                    else f"gemini-{secrets.token_hex(12)}",
                    str(chunk.get("modelVersion") or ""),
                )
            )
        usage = chunk.get("usageMetadata")
        first = self._usage is None
        if isinstance(usage, dict):
            self._usage = usage_from_wire(usage)
        candidates = chunk.get("candidates")
        finishing = False
        for candidate in candidates if isinstance(candidates, list) else ():
            if isinstance(candidate, dict):
                finishing = self._candidate(candidate, out) or finishing
        usage_now = self._usage
        if usage_now is not None and usage_now is not self._reported:
            if finishing and all(c.finished for c in self._choices.values()):
                out.append(usage_now)  # the whole answer's counts
                self._reported = usage_now
            elif first:  # the input count, before the answer
                out.append(msgspec.structs.replace(usage_now, partial=True))
                self._reported = usage_now
        feedback = chunk.get("promptFeedback")
        if not candidates and isinstance(feedback, dict) and feedback.get("blockReason"):
            reason = str(feedback["blockReason"])
            detail = feedback.get("blockReasonMessage")
            message = f"the upstream blocked the prompt ({reason})" + (
                f": {detail}" if isinstance(detail, str) and detail else ""
            )
            out.extend(self._fail(Error("invalid_request", message, 400, "content_filter")))
        return out

    def _candidate(self, candidate: dict[str, Any], out: list[Event]) -> bool:
        """Decode one candidate into ``out``; True when it finished in this frame."""
        index = candidate.get("index")
        index = index if isinstance(index, int) else 0
        state = self._choices.get(index)
        if state is None:
            state = self._choices[index] = _Choice()
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else ():
            if isinstance(part, dict):
                self._part(part, index, state, out)
        reason = candidate.get("finishReason")
        if reason and not state.finished:
            state.finished = True
            mapped = FINISH_FROM_WIRE.get(str(reason), "error")
            if mapped == "stop" and state.calls:
                mapped = "tool_calls"
            out.append(Finish(mapped, index))
            return True
        return False

    def _part(self, part: dict[str, Any], index: int, state: _Choice, out: list[Event]) -> None:
        signature = part.get("thoughtSignature")
        if not isinstance(signature, str) or not signature:
            signature = None
        call = part.get("functionCall")
        if isinstance(call, dict):
            args = call.get("args")
            call_id = call.get("id")
            out.append(
                ToolCallDelta(
                    state.calls,
                    call_id if isinstance(call_id, str) and call_id else _call_id(),
                    str(call.get("name") or ""),
                    _json_encode(args if isinstance(args, dict) else {}).decode(),
                    signature,
                    index,
                )
            )
            state.calls += 1
            return
        text = part.get("text")
        text = text if isinstance(text, str) else ""
        if signature is not None and state.signed:
            signature = None  # see the module docstring: one reasoning signature per choice
        if part.get("thought") is True:
            if text or signature:
                out.append(ReasoningDelta(text, signature, choice=index))
        elif signature is not None:
            out.append(ReasoningDelta(signature=signature, choice=index))
            if text:
                out.append(TextDelta(text, index))
        elif text:
            out.append(TextDelta(text, index))
        if signature is not None:
            state.signed = True


def _call_id() -> str:
    return f"call_{secrets.token_hex(12)}"
