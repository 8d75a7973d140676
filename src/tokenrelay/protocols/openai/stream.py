"""OpenAI Chat Completions streaming: frames -> events and events -> frames (the
same-protocol passthrough is in ``passthrough.py``).

The passthrough is the hot path of an OpenAI client on an OpenAI-compatible upstream:
each frame is validated and inspected through a small ``msgspec`` view (finish reason,
usage, error, text length) and forwarded as the upstream wrote it, with only ``model``
rewritten, so fields the canon does not know (``system_fingerprint``, ``logprobs``,
``obfuscation``, provider extras) reach the client unchanged.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ...events import (
    ERROR_STATUS,
    Error,
    Event,
    Finish,
    ReasoningDelta,
    Start,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from ...fold import Tally, charged_usage
from ...ids import token_hex
from ...sse import ServerSentEvent
from ...sse import encode as sse_encode
from ..base import MALFORMED as MALFORMED
from ..base import TRUNCATED as TRUNCATED
from ..base import InBandEnd

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.decode

DONE = sse_encode(b"[DONE]")

# finish_reason words <-> canonical reasons. A canonical "error" has no OpenAI word: the
# error itself travels as an error frame, and the choice is closed with "stop".
FINISH_FROM_WIRE: dict[str, str] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "insufficient_system_resource": "error",
    "error": "error",
}
FINISH_TO_WIRE: dict[str, str] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "error": "stop",
}

_ERROR_TYPE = {
    "invalid_request": "invalid_request_error",
    "not_found": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "rate_limit": "rate_limit_error",
    "timeout": "timeout_error",
    "overloaded": "server_error",
    "upstream": "upstream_error",
    "server": "server_error",
}


def error_object(kind: str, message: str, code: str | None, param: str | None) -> dict[str, Any]:
    """The ``{"message", "type", "param", "code"}`` object of an OpenAI error."""
    return {
        "message": message,
        "type": _ERROR_TYPE.get(kind, "server_error"),
        "param": param,
        "code": code,
    }


def error_frame(error: Error) -> bytes:
    """The in-stream error the official SDKs raise on: ``data: {"error": {...}}``."""
    obj = error_object(error.kind, error.message, error.code, error.param)
    return sse_encode(_json_encode({"error": obj}))


# Opaque provider data on the OpenAI wire, in the shapes already in use there:
# reasoning signatures and redacted reasoning as ``reasoning_details`` entries (the
# OpenRouter convention), a Gemini thought signature on a tool call as
# ``extra_content.google.thought_signature`` (Google's OpenAI-compatible API).


def reasoning_details(signature: str | None, redacted: str | None) -> list[dict[str, Any]]:
    details: list[dict[str, Any]] = []
    if signature:
        details.append({"type": "reasoning.text", "text": "", "signature": signature})
    if redacted:
        details.append({"type": "reasoning.encrypted", "data": redacted})
    return details


def opaque_reasoning(detail: Any) -> tuple[str | None, str | None]:
    """(signature, redacted) of one ``reasoning_details`` entry."""
    if not isinstance(detail, dict):
        return None, None
    if detail.get("type") == "reasoning.encrypted" and isinstance(detail.get("data"), str):
        return None, detail["data"]
    signature = detail.get("signature")
    return (signature if isinstance(signature, str) and signature else None), None


def call_signature(call: Any) -> str | None:
    extra = call.get("extra_content") if isinstance(call, dict) else None
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) and signature else None


def usage_from_wire(raw: dict[str, Any]) -> Usage:
    prompt = raw.get("prompt_tokens_details") or {}
    completion = raw.get("completion_tokens_details") or {}
    cached = prompt.get("cached_tokens") or raw.get("prompt_cache_hit_tokens") or 0
    return Usage(
        input=int(raw.get("prompt_tokens") or 0),
        output=int(raw.get("completion_tokens") or 0),
        cached=int(cached),
        reasoning=int(completion.get("reasoning_tokens") or 0),
        cache_write=int(prompt.get("cache_write_tokens") or 0),
    )


def usage_to_wire(usage: Usage) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output,
        "prompt_tokens_details": _prompt_details(usage),
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
    }
    if usage.estimated:
        wire["estimated"] = True  # the upstream gave no counts: see fold.charged_usage
    return wire


def _prompt_details(usage: Usage) -> dict[str, int]:
    """``cached_tokens`` (OpenAI's field, inside ``prompt_tokens``), and the cache writes
    as ``cache_write_tokens`` (OpenRouter's field) when there are any: the wire has no
    field for their lifetime, the usage record and the cost keep it."""
    details = {"cached_tokens": usage.cached}
    if usage.cache_write:
        details["cache_write_tokens"] = usage.cache_write
    return details


_KIND_OF_TYPE = {wire: kind for kind, wire in _ERROR_TYPE.items() if kind != "not_found"}


def upstream_error(raw: Any) -> Error:
    """An in-stream ``{"error": {...}}`` as the canonical error it describes: its kind
    from ``type`` (else ``upstream``), its status from a numeric ``code`` (OpenRouter's)."""
    if not isinstance(raw, dict):
        return Error("upstream", str(raw), 502)
    message = str(raw.get("message") or "upstream error")
    kind = _KIND_OF_TYPE.get(str(raw.get("type")), "upstream")
    code = raw.get("code")
    status = ERROR_STATUS.get(kind, 502) if kind != "upstream" else 502
    if isinstance(code, int) and 400 <= code <= 599:
        status = code
    return Error(kind, message, status, str(code) if code is not None else None)


class OpenAIStreamDecoder:
    """Upstream Chat Completions frames -> canonical events."""

    __slots__ = ("_finished", "_started", "done")

    def __init__(self) -> None:
        self.done = False
        self._started = False
        self._finished: set[int] = set()

    def feed(self, frame: ServerSentEvent) -> list[Event]:
        data = frame.data
        if data == "[DONE]":
            self.done = True
            return []
        try:
            chunk = _json_decode(data)
        except msgspec.DecodeError:
            return [MALFORMED]
        if not isinstance(chunk, dict):
            return [MALFORMED]
        out: list[Event] = []
        if not self._started:
            self._started = True
            extra = {}
            if chunk.get("system_fingerprint"):
                extra["system_fingerprint"] = chunk["system_fingerprint"]
            out.append(
                Start(
                    str(chunk.get("id") or ""),
                    str(chunk.get("model") or ""),
                    int(chunk.get("created") or 0),
                    extra=extra,
                )
            )
        for choice in chunk.get("choices") or ():
            index = int(choice.get("index") or 0)
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                out.append(ReasoningDelta(reasoning, choice=index))
            for detail in delta.get("reasoning_details") or ():
                signature, redacted = opaque_reasoning(detail)
                if signature or redacted:
                    out.append(ReasoningDelta("", signature, redacted, index))
            content = delta.get("content")
            if content:
                out.append(TextDelta(content, index))
            for call in delta.get("tool_calls") or ():
                fn = call.get("function") or {}
                out.append(
                    ToolCallDelta(
                        int(call.get("index") or 0),
                        call.get("id") or None,
                        fn.get("name") or None,
                        fn.get("arguments") or "",
                        call_signature(call),
                        choice=index,
                    )
                )
            reason = choice.get("finish_reason")
            if reason and index not in self._finished:
                self._finished.add(index)
                out.append(Finish(FINISH_FROM_WIRE.get(reason, "stop"), index))
        usage = chunk.get("usage")
        if usage:
            out.append(usage_from_wire(usage))
        if chunk.get("error"):
            out.append(upstream_error(chunk["error"]))
        return out

    def close(self) -> list[Event]:
        return [] if self.done or self._finished else [TRUNCATED]


class OpenAIStreamEncoder(InBandEnd):
    """Canonical events -> Chat Completions chunks for an OpenAI client.

    The role arrives in the first delta of each choice; usage, when the client asked for
    it, is held until the end and sent as the final chunk with empty ``choices``.
    Output is a list of whole SSE frames, so the stream hub can number each one.
    """

    _error_frame = staticmethod(error_frame)

    def __init__(self, model: str, include_usage: bool, tally: Tally) -> None:
        self.include_usage = include_usage
        self.tally = tally
        self.ended = False
        self._model = model
        self._id = f"chatcmpl-{token_hex(12)}"
        self._created = int(time.time())
        self._fingerprint: Any = None
        self._head = b""
        self._roles: set[int] = set()
        self._finished: set[int] = set()
        self._calls: set[tuple[int, int]] = set()

    def _start(self, event: Start | None) -> None:
        if event is not None:
            self._id = event.id or self._id
            self._created = event.created or self._created
            self._fingerprint = event.extra.get("system_fingerprint")
        self._head = chunk_head(self._id, self._created, self._model, self._fingerprint)

    def _chunk(self, out: list[bytes], choice: int, delta: bytes, finish: bytes = b"null") -> None:
        if not self._head:
            self._start(None)
        if choice not in self._roles:
            self._roles.add(choice)
            self._chunk(out, choice, ROLE_DELTA)
        out.append(sse_encode(choice_chunk(self._head, choice, delta, finish)))

    def encode(self, events: list[Event]) -> list[bytes]:
        out: list[bytes] = []
        tally = self.tally
        for event in events:
            if isinstance(event, TextDelta):
                tally.output_chars += len(event.text)
                self._chunk(out, event.choice, b'{"content":' + _json_encode(event.text) + b"}")
            elif isinstance(event, ReasoningDelta):
                if event.text:
                    tally.output_chars += len(event.text)
                    delta = b'{"reasoning_content":' + _json_encode(event.text) + b"}"
                    self._chunk(out, event.choice, delta)
                details = reasoning_details(event.signature, event.redacted)
                if details:
                    delta = _json_encode({"reasoning_details": details})
                    self._chunk(out, event.choice, delta)
            elif isinstance(event, ToolCallDelta):
                tally.output_chars += len(event.arguments)
                call: dict[str, Any] = {"index": event.index}
                key = (event.choice, event.index)
                if key not in self._calls:
                    self._calls.add(key)
                    call["id"] = event.id or f"call_{token_hex(12)}"
                    call["type"] = "function"
                    call["function"] = {"name": event.name or "", "arguments": event.arguments}
                else:
                    call["function"] = {"arguments": event.arguments}
                if event.signature:
                    call["extra_content"] = {"google": {"thought_signature": event.signature}}
                self._chunk(out, event.choice, _json_encode({"tool_calls": [call]}))
            elif isinstance(event, Finish):
                tally.finish_reason = event.reason
                self._finished.add(event.choice)
                finish = _json_encode(FINISH_TO_WIRE.get(event.reason, "stop"))
                self._chunk(out, event.choice, b"{}", finish)
            elif isinstance(event, Usage):
                tally.usage = event
            elif isinstance(event, Start):
                self._start(event)
                if 0 not in self._roles:  # the role goes out at once: the first byte
                    self._roles.add(0)
                    out.append(sse_encode(choice_chunk(self._head, 0, ROLE_DELTA, b"null")))
            elif isinstance(event, Error):
                out.append(self.fail(event)[0])
                break
        if out:
            tally.started = True
        return out

    def close(self, cancelled: bool = False) -> list[bytes]:
        """The trailer: on a stop by the user, each open choice is closed with
        ``finish_reason: "stop"`` first; then the usage chunk if asked for; ``[DONE]``."""
        if self.ended:
            return []
        self.ended = True
        out: list[bytes] = []
        if cancelled:
            for choice in sorted(self._roles - self._finished):
                self._chunk(out, choice, b"{}", b'"stop"')
            self.tally.finish_reason = self.tally.finish_reason or "stop"
        if self.include_usage:
            if not self._head:
                self._start(None)
            out.append(sse_encode(usage_chunk(self._head, charged_usage(self.tally))))
        out.append(DONE)
        return out


ROLE_DELTA = b'{"role":"assistant","content":""}'


def chunk_head(id: str, created: int, model: str, fingerprint: Any = None) -> bytes:
    """The constant start of every chunk of one stream, up to ``"choices":[``."""
    return (
        b'{"id":'
        + _json_encode(id)
        + b',"object":"chat.completion.chunk","created":%d,"model":' % created
        + _json_encode(model)
        + (b',"system_fingerprint":' + _json_encode(fingerprint) if fingerprint else b"")
        + b',"choices":['
    )


def choice_chunk(head: bytes, choice: int, delta: bytes, finish: bytes) -> bytes:
    return (
        head
        + b'{"index":%d,"delta":' % choice
        + delta
        + b',"logprobs":null,"finish_reason":'
        + finish
        + b"}]}"
    )


def usage_chunk(head: bytes, usage: Usage) -> bytes:
    return head + b'],"usage":' + _json_encode(usage_to_wire(usage)) + b"}"
