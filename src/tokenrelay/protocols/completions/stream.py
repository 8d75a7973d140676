"""``text_completion`` streams: upstream frames -> canonical events (``CompletionsDecoder``),
events -> frames for a client (``CompletionsEncoder``), and frames forwarded as the
upstream wrote them, only ``model`` rewritten (``CompletionsPassthrough``).

A chunk is ``{"id", "object": "text_completion", "created", "model", "choices": [{"text",
"index", "logprobs", "finish_reason"}]}``; with ``stream_options.include_usage`` a last
chunk has empty ``choices`` and the ``usage``; ``data: [DONE]`` ends the stream.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ...events import Error, Event, Finish, Start, TextDelta, Usage
from ...fold import Tally, charged_usage
from ...ids import token_hex
from ...sse import ServerSentEvent
from ...sse import encode as sse_encode
from ..base import MALFORMED, TRUNCATED, InBandEnd
from ..openai.stream import (
    DONE,
    FINISH_FROM_WIRE,
    FINISH_TO_WIRE,
    error_frame,
    upstream_error,
    usage_from_wire,
    usage_to_wire,
)

_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode


class CompletionsDecoder:
    """Upstream ``text_completion`` frames -> canonical events."""

    def __init__(self) -> None:
        self.done = False
        self._started = False
        self._finished: set[int] = set()

    def feed(self, frame: ServerSentEvent) -> list[Event]:
        if frame.data == "[DONE]":
            self.done = True
            return []
        try:
            chunk = _decode(frame.data)
        except msgspec.DecodeError:
            return [MALFORMED]
        if not isinstance(chunk, dict):
            return [MALFORMED]
        out: list[Event] = []
        if not self._started:
            self._started = True
            out.append(
                Start(
                    str(chunk.get("id") or ""),
                    str(chunk.get("model") or ""),
                    int(chunk.get("created") or 0),
                )
            )
        for choice in chunk.get("choices") or ():
            index = int(choice.get("index") or 0)
            if choice.get("text"):
                out.append(TextDelta(str(choice["text"]), index))
            reason = choice.get("finish_reason")
            if reason and index not in self._finished:
                self._finished.add(index)
                out.append(Finish(FINISH_FROM_WIRE.get(reason, "stop"), index))
        if chunk.get("usage"):
            out.append(usage_from_wire(chunk["usage"]))
        if chunk.get("error"):
            out.append(upstream_error(chunk["error"]))
        return out

    def close(self) -> list[Event]:
        return [] if self.done or self._finished else [TRUNCATED]


class _Chunks:
    """The chunks of one stream, as bytes."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = f"cmpl-{token_hex(12)}"
        self.created = int(time.time())

    def choice(self, index: int, text: str, finish: str | None) -> bytes:
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
        return sse_encode(_encode(self._obj([choice])))

    def usage(self, usage: Usage) -> bytes:
        return sse_encode(_encode({**self._obj([]), "usage": usage_to_wire(usage)}))

    def _obj(self, choices: list[Any]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }


class CompletionsEncoder(InBandEnd):
    """Canonical events -> ``text_completion`` chunks (reasoning and tool calls have no
    slot on this wire and are dropped)."""

    _error_frame = staticmethod(error_frame)

    def __init__(self, model: str, include_usage: bool, tally: Tally) -> None:
        self.include_usage = include_usage
        self.tally = tally
        self.ended = False
        self._chunks = _Chunks(model)
        self._open: set[int] = set()

    def encode(self, events: list[Event]) -> list[bytes]:
        out: list[bytes] = []
        tally, chunks = self.tally, self._chunks
        for event in events:
            if isinstance(event, TextDelta):
                tally.output_chars += len(event.text)
                self._open.add(event.choice)
                out.append(chunks.choice(event.choice, event.text, None))
            elif isinstance(event, Finish):
                tally.finish_reason = event.reason
                self._open.discard(event.choice)
                out.append(
                    chunks.choice(event.choice, "", FINISH_TO_WIRE.get(event.reason, "stop"))
                )
            elif isinstance(event, Usage):
                tally.usage = event
            elif isinstance(event, Start):
                chunks.id = event.id or chunks.id
                chunks.created = event.created or chunks.created
            elif isinstance(event, Error):
                out.extend(self.fail(event))
                break
        if out:
            tally.started = True
        return out

    def close(self, cancelled: bool = False) -> list[bytes]:
        if self.ended:
            return []
        self.ended = True
        out: list[bytes] = []
        if cancelled:
            out = [self._chunks.choice(c, "", "stop") for c in sorted(self._open)]
            self.tally.finish_reason = self.tally.finish_reason or "stop"
        if self.include_usage:
            out.append(self._chunks.usage(charged_usage(self.tally)))
        out.append(DONE)
        return out


class CompletionsPassthrough(InBandEnd):
    """Upstream ``text_completion`` frames -> the same frames, ``model`` rewritten; the
    usage-only chunk the gateway asked for is kept from a client that did not."""

    _error_frame = staticmethod(error_frame)
    payloads = True

    def __init__(self, model: str, include_usage: bool, tally: Tally) -> None:
        self.include_usage = include_usage
        self.tally = tally
        self.ended = False
        self._model = model
        self._complete = False
        self._open: set[int] = set()
        self._chunks = _Chunks(model)

    def encode(self, frames: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        tally = self.tally
        if self._complete:
            return out
        for data in frames:
            if data == b"[DONE]":
                out.extend(self._finish())
                break
            try:
                chunk = _decode(data)
            except msgspec.DecodeError:
                out.extend(self.fail(MALFORMED))
                break
            if not isinstance(chunk, dict):
                out.extend(self.fail(MALFORMED))
                break
            if chunk.get("id") and isinstance(chunk["id"], str):
                self._chunks.id = chunk["id"]
            if chunk.get("error"):
                tally.error = upstream_error(chunk["error"])
            choices = chunk.get("choices") or []
            if chunk.get("usage"):
                tally.usage = usage_from_wire(chunk["usage"])
                if not choices and not self.include_usage:
                    continue
            for choice in choices if isinstance(choices, list) else ():
                index = int(choice.get("index") or 0)
                tally.output_chars += len(choice.get("text") or "")
                if choice.get("finish_reason"):
                    tally.finish_reason = FINISH_FROM_WIRE.get(choice["finish_reason"], "stop")
                    self._open.discard(index)
                else:
                    self._open.add(index)
            if "model" in chunk:
                chunk["model"] = self._model
            out.append(sse_encode(_encode(chunk)))
        if out:
            tally.started = True
        return out

    def close(self, cancelled: bool = False) -> list[bytes]:
        if self.ended:
            return []
        tally = self.tally
        if self._complete:
            self.ended = True
            return []
        if not cancelled and not (tally.finish_reason or tally.error):
            return self.fail(TRUNCATED)
        self.ended = True
        out: list[bytes] = []
        if cancelled:
            out = [self._chunks.choice(c, "", "stop") for c in sorted(self._open)]
            tally.finish_reason = tally.finish_reason or "stop"
        return out + self._finish()

    def fail(self, error: Error) -> list[bytes]:
        if self._complete:
            self.ended = True
            return []
        return super().fail(error)

    def _finish(self) -> list[bytes]:
        self._complete = True
        out: list[bytes] = []
        if self.include_usage and self.tally.usage is None:
            out.append(self._chunks.usage(charged_usage(self.tally)))
        out.append(DONE)
        return out
