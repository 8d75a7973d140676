"""The OpenAI same-protocol passthrough: an OpenAI client on an OpenAI-compatible
upstream. The hot path: each frame is validated and inspected through a small
``msgspec`` view (finish reason, usage, error, text length) and forwarded as the
upstream wrote it, with only ``model`` rewritten, so fields the canon does not know
(``system_fingerprint``, ``logprobs``, ``obfuscation``, provider extras) reach the
client unchanged.

It works on each frame's data as bytes (``Upstream.payloads()``): no ``str`` is made of
a frame that is forwarded as it came. A frame with invalid UTF-8 anywhere in it is
forwarded with U+FFFD in its place, as decoding it to ``str`` used to do.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from ...events import Error
from ...fold import Tally, charged_usage
from ...sse import encode as sse_encode
from ..base import InBandEnd
from .stream import (
    DONE,
    FINISH_FROM_WIRE,
    MALFORMED,
    TRUNCATED,
    _json_encode,
    choice_chunk,
    chunk_head,
    error_frame,
    upstream_error,
    usage_chunk,
    usage_from_wire,
)


class _FunctionView(msgspec.Struct):
    arguments: str | None = None


class _CallView(msgspec.Struct):
    function: _FunctionView | None = None


class _DeltaView(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[_CallView] | None = None

    def chars(self) -> int:
        """What this delta adds to the answer, in characters (for a usage estimate)."""
        n = len(self.content or "") + len(self.reasoning_content or self.reasoning or "")
        for call in self.tool_calls or ():
            if call.function is not None:
                n += len(call.function.arguments or "")
        return n


class _ChoiceView(msgspec.Struct):
    index: int = 0
    finish_reason: str | None = None
    delta: _DeltaView | None = None


class _ChunkView(msgspec.Struct):
    id: str | None = None
    created: int | None = None
    choices: list[_ChoiceView] | None = None
    usage: dict[str, Any] | None = None
    error: Any = None


_view = msgspec.json.Decoder(_ChunkView).decode
_MODEL = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')


class OpenAIPassthrough(InBandEnd):
    """Upstream Chat Completions frames -> the same frames for an OpenAI client.

    Every frame is validated (a malformed one ends the stream with an error frame
    instead of reaching the client's JSON parser). The usage-only frame that the gateway
    asked for on its own account is kept from a client that did not ask for usage.
    """

    _error_frame = staticmethod(error_frame)
    payloads = True  # encode() takes each frame's data bytes

    def __init__(self, model: str, include_usage: bool, tally: Tally) -> None:
        self.include_usage = include_usage
        self.tally = tally
        self.ended = False
        self._done = False  # the upstream's [DONE] came
        self._complete = False  # the client's [DONE] went out: nothing may follow
        self._model_name = model
        self._named = b'"model":' + _json_encode(model)
        self._upstream: bytes | None = None  # the upstream's own "model":"..." text
        self._id = ""
        self._created = 0
        self._open: set[int] = set()

    def _inspect(self, data: bytes) -> _ChunkView | None:
        try:
            return _view(data)
        except msgspec.ValidationError:
            # Valid JSON of an unexpected shape: forward it, learn nothing from it.
            return _ChunkView()
        except msgspec.DecodeError:
            return None

    def encode(self, frames: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        tally = self.tally
        if self._complete:
            return out
        for data in frames:
            if data == b"[DONE]":
                # The answer is whole: the client's [DONE] goes out with the frames of
                # this read (one write less), not when the upstream's body ends after it.
                self._done = True
                out.extend(self._finish())
                break
            if not data.isascii():
                try:
                    data.decode()
                except UnicodeDecodeError:  # the client gets valid UTF-8 whatever came
                    data = data.decode("utf-8", "replace").encode()
            view = self._inspect(data)
            if view is None:
                out.extend(self.fail(MALFORMED))
                break
            if view.id and not self._id:
                self._id, self._created = view.id, view.created or 0
            if view.error:
                tally.error = upstream_error(view.error)
            if view.usage:
                tally.usage = usage_from_wire(view.usage)
                if not view.choices and not self.include_usage:
                    continue
            for choice in view.choices or ():
                if choice.finish_reason:
                    tally.finish_reason = FINISH_FROM_WIRE.get(choice.finish_reason, "stop")
                    self._open.discard(choice.index)
                else:
                    self._open.add(choice.index)
                if choice.delta is not None:
                    tally.output_chars += choice.delta.chars()
            data = self._rename(data)
            out.append(sse_encode(data))
        if out:
            tally.started = True
        return out

    def _rename(self, data: bytes) -> bytes:
        """``data`` with its first ``"model": "..."`` naming the client's model. The
        upstream writes the same text in every frame: once seen, it is replaced where
        the first ``"model"`` stands without the regex (~0.6 µs less per frame)."""
        known = self._upstream
        if known is not None:
            at = data.find(b'"model"')
            if data.startswith(known, at):
                return data[:at] + self._named + data[at + len(known) :]
        found = _MODEL.search(data)
        if found is None:
            return data
        self._upstream = found.group()
        return data[: found.start()] + self._named + data[found.end() :]

    def close(self, cancelled: bool = False) -> list[bytes]:
        if self.ended:
            return []
        tally = self.tally
        if self._complete:  # already ended with the upstream's [DONE]
            self.ended = True
            return []
        if not cancelled and not (self._done or tally.finish_reason or tally.error):
            return self.fail(TRUNCATED)  # a body that just stops is not a whole answer
        self.ended = True
        out: list[bytes] = []
        if cancelled:
            head = self._head()
            out = [sse_encode(choice_chunk(head, c, b"{}", b'"stop"')) for c in sorted(self._open)]
            tally.finish_reason = tally.finish_reason or "stop"
        return out + self._finish()

    def fail(self, error: Error) -> list[bytes]:
        if self._complete:  # the client has its whole answer: nothing after [DONE]
            self.ended = True
            return []
        return super().fail(error)

    def _head(self) -> bytes:
        return chunk_head(self._id or "chatcmpl-relay", self._created, self._model_name)

    def _finish(self) -> list[bytes]:
        """The end of a whole answer: the usage the client asked for (estimated when
        the upstream gave none), then [DONE]."""
        self._complete = True
        out: list[bytes] = []
        if self.include_usage and self.tally.usage is None:
            out.append(sse_encode(usage_chunk(self._head(), charged_usage(self.tally))))
        out.append(DONE)
        return out
