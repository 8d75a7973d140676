"""OpenAI Chat Completions streaming: frames -> events, events -> frames, and the
same-protocol passthrough.

The passthrough is the hot path of an OpenAI client on an OpenAI-compatible upstream:
each frame is validated and inspected through a small ``msgspec`` view (finish reason,
usage, error, text length) and forwarded as the upstream wrote it, with only ``model``
rewritten, so fields the canon does not know (``system_fingerprint``, ``logprobs``,
``obfuscation``, provider extras) reach the client unchanged.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

import msgspec

from ..events import (
    Error,
    Event,
    Finish,
    ReasoningDelta,
    Start,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from ..fold import Tally
from ..sse import ServerSentEvent
from ..sse import encode as sse_encode

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


def usage_from_wire(raw: dict[str, Any]) -> Usage:
    prompt = raw.get("prompt_tokens_details") or {}
    completion = raw.get("completion_tokens_details") or {}
    cached = prompt.get("cached_tokens") or raw.get("prompt_cache_hit_tokens") or 0
    return Usage(
        input=int(raw.get("prompt_tokens") or 0),
        output=int(raw.get("completion_tokens") or 0),
        cached=int(cached),
        reasoning=int(completion.get("reasoning_tokens") or 0),
    )


def usage_to_wire(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cached},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
    }


def _upstream_error(raw: Any) -> Error:
    if isinstance(raw, dict):
        message = str(raw.get("message") or "upstream error")
        code = raw.get("code")
        return Error("upstream", message, 502, str(code) if code is not None else None)
    return Error("upstream", str(raw), 502)


MALFORMED = Error("upstream", "the upstream sent a malformed frame", 502, "upstream_malformed")
TRUNCATED = Error(
    "upstream", "the upstream closed the stream before it finished", 502, "upstream_truncated"
)


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
            out.append(_upstream_error(chunk["error"]))
        return out

    def close(self) -> list[Event]:
        return [] if self.done or self._finished else [TRUNCATED]


class OpenAIStreamEncoder:
    """Canonical events -> Chat Completions chunks for an OpenAI client.

    The role arrives in the first delta of each choice; usage, when the client asked for
    it, is held until the end and sent as the final chunk with empty ``choices``.
    """

    def __init__(self, model: str, include_usage: bool, tally: Tally) -> None:
        self.include_usage = include_usage
        self.tally = tally
        self.ended = False
        self._model = model
        self._id = f"chatcmpl-{secrets.token_hex(12)}"
        self._created = int(time.time())
        self._head = b""
        self._roles: set[int] = set()
        self._calls: set[tuple[int, int]] = set()

    def _start(self, event: Start | None) -> None:
        if event is not None:
            self._id = event.id or self._id
            self._created = event.created or self._created
        fingerprint = event.extra.get("system_fingerprint") if event is not None else None
        self._head = (
            b'{"id":'
            + _json_encode(self._id)
            + b',"object":"chat.completion.chunk","created":%d,"model":' % self._created
            + _json_encode(self._model)
            + (b',"system_fingerprint":' + _json_encode(fingerprint) if fingerprint else b"")
            + b',"choices":[{"index":'
        )

    def _chunk(self, choice: int, delta: bytes, finish: bytes = b"null") -> bytes:
        if not self._head:
            self._start(None)
        prefix = b""
        if choice not in self._roles:
            self._roles.add(choice)
            prefix = self._chunk(choice, b'{"role":"assistant","content":""}')
        return prefix + sse_encode(
            self._head
            + b"%d" % choice
            + b',"delta":'
            + delta
            + b',"logprobs":null,"finish_reason":'
            + finish
            + b"}]}"
        )

    def encode(self, events: list[Event]) -> bytes:
        out: list[bytes] = []
        tally = self.tally
        for event in events:
            if isinstance(event, TextDelta):
                tally.output_chars += len(event.text)
                out.append(
                    self._chunk(event.choice, b'{"content":' + _json_encode(event.text) + b"}")
                )
            elif isinstance(event, ReasoningDelta):
                if event.text:
                    tally.output_chars += len(event.text)
                    delta = b'{"reasoning_content":' + _json_encode(event.text) + b"}"
                    out.append(self._chunk(event.choice, delta))
            elif isinstance(event, ToolCallDelta):
                tally.output_chars += len(event.arguments)
                call: dict[str, Any] = {"index": event.index}
                key = (event.choice, event.index)
                if key not in self._calls:
                    self._calls.add(key)
                    call["id"] = event.id or f"call_{secrets.token_hex(12)}"
                    call["type"] = "function"
                    call["function"] = {"name": event.name or "", "arguments": event.arguments}
                else:
                    call["function"] = {"arguments": event.arguments}
                out.append(self._chunk(event.choice, _json_encode({"tool_calls": [call]})))
            elif isinstance(event, Finish):
                tally.finish_reason = event.reason
                finish = _json_encode(FINISH_TO_WIRE.get(event.reason, "stop"))
                out.append(self._chunk(event.choice, b"{}", finish))
            elif isinstance(event, Usage):
                tally.usage = event
            elif isinstance(event, Start):
                self._start(event)
                if 0 not in self._roles:
                    self._roles.add(0)
                    out.append(self._chunk(0, b'{"role":"assistant","content":""}'))
            elif isinstance(event, Error):
                tally.error = event
                out.append(error_frame(event))
                self.ended = True
                break
        tally.started = tally.started or bool(out)
        return b"".join(out)

    def close(self) -> bytes:
        if self.ended:
            return b""
        self.ended = True
        tail = b""
        if self.include_usage:
            usage = self.tally.usage or Usage(estimated=True)
            if not self._head:
                self._start(None)
            head = self._head[: -len(b'{"index":')]  # '..."choices":['
            body = head + b'],"usage":' + _json_encode(usage_to_wire(usage)) + b"}"
            tail = sse_encode(body)
        return tail + DONE

    def fail(self, error: Error) -> bytes:
        """End the stream with ``error`` in-band (the response has already started)."""
        if self.ended:
            return b""
        self.ended = True
        self.tally.error = error
        return error_frame(error)


# --- the same-protocol passthrough ---------------------------------------------------


class _DeltaView(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None


class _ChoiceView(msgspec.Struct):
    finish_reason: str | None = None
    delta: _DeltaView | None = None


class _ChunkView(msgspec.Struct):
    choices: list[_ChoiceView] | None = None
    usage: dict[str, Any] | None = None
    error: Any = None


_view = msgspec.json.Decoder(_ChunkView).decode
_MODEL = re.compile(r'"model"\s*:\s*"(?:[^"\\]|\\.)*"')


class OpenAIPassthrough:
    """Upstream Chat Completions frames -> the same frames for an OpenAI client.

    Every frame is validated (a malformed one ends the stream with an error frame
    instead of reaching the client's JSON parser). The usage-only frame that the gateway
    asked for on its own account is kept from a client that did not ask for usage.
    """

    def __init__(self, model: str, include_usage: bool, tally: Tally) -> None:
        self.include_usage = include_usage
        self.tally = tally
        self.ended = False
        self._done = False
        self._model = '"model":' + _json_encode(model).decode().replace("\\", "\\\\")

    def _inspect(self, data: str) -> _ChunkView | None:
        try:
            return _view(data)
        except msgspec.ValidationError:
            # Valid JSON of an unexpected shape: forward it, learn nothing from it.
            return _ChunkView()
        except msgspec.DecodeError:
            return None

    def encode(self, frames: list[ServerSentEvent]) -> bytes:
        out: list[bytes] = []
        tally = self.tally
        for frame in frames:
            data = frame.data
            if data == "[DONE]":
                self._done = True
                continue
            view = self._inspect(data)
            if view is None:
                tally.error = MALFORMED
                out.append(error_frame(MALFORMED))
                self.ended = True
                break
            if view.error:
                tally.error = _upstream_error(view.error)
            if view.usage:
                tally.usage = usage_from_wire(view.usage)
                if not view.choices and not self.include_usage:
                    continue
            for choice in view.choices or ():
                if choice.finish_reason:
                    tally.finish_reason = FINISH_FROM_WIRE.get(choice.finish_reason, "stop")
                delta = choice.delta
                if delta is not None:
                    tally.output_chars += len(delta.content or "") + len(
                        delta.reasoning_content or ""
                    )
            out.append(sse_encode(_MODEL.sub(self._model, data, count=1)))
        if out:
            tally.started = True
        return b"".join(out)

    def close(self) -> bytes:
        if self.ended:
            return b""
        self.ended = True
        if self._done or self.tally.finish_reason or self.tally.error:
            return DONE
        self.tally.error = TRUNCATED
        return error_frame(TRUNCATED)

    def fail(self, error: Error) -> bytes:
        """End the stream with ``error`` in-band (the response has already started)."""
        if self.ended:
            return b""
        self.ended = True
        self.tally.error = error
        return error_frame(error)
