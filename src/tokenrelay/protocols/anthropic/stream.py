"""Anthropic Messages streaming: frames -> events, events -> frames, and the
same-protocol passthrough.

Wire reference: the official ``anthropic`` SDK (``types/raw_message_stream_event.py``
and ``lib/streaming/_messages.py``, whose accumulator is what ``messages.stream()``
clients run over our bytes). A stream is ``message_start``, then content blocks that
never overlap (``content_block_start`` / ``_delta`` / ``_stop``, consecutive
``index``), then ``message_delta`` (stop reason, cumulative usage) and
``message_stop``; ``ping`` may come anywhere and ``error`` ends the stream. The shared
vocabulary (tables, errors, usage, views) is in ``wire.py``.
"""

from __future__ import annotations

import re
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
)
from ...fold import Tally, charged_usage
from ...sse import ServerSentEvent
from ...sse import encode as sse_encode
from ..base import InBandEnd
from ..blocks import Args, CloseCall, Op, OpenCall, ToolCallSequencer
from .wire import (
    FINISH_FROM_WIRE,
    MALFORMED,
    TRUNCATED,
    BlockView,
    ErrorView,
    FrameView,
    MessageView,
    UsageState,
    error_frame,
    error_from_wire,
    new_message_id,
    stop_to_wire,
    tool_use_id,
    usage_to_wire,
    view,
)

_json_encode = msgspec.json.Encoder().encode


# --- upstream frames -> canonical events --------------------------------------------


class AnthropicStreamDecoder:
    """Upstream Messages frames -> canonical events.

    Tool blocks are numbered in order of appearance (the k-th ``tool_use`` block is
    tool call k); server-tool blocks and unknown block types carry nothing the canon
    can hold and are skipped. Usage is emitted as a snapshot when ``message_start``
    gives the input counts and again, final, with ``message_delta``.
    """

    __slots__ = ("_blocks", "_errored", "_tools", "_usage", "done")

    def __init__(self) -> None:
        self.done = False
        self._errored = False
        self._blocks: dict[int, int] = {}  # block index -> tool index, or -1 (not a tool)
        self._tools = 0
        self._usage = UsageState()

    def feed(self, frame: ServerSentEvent) -> list[Event]:
        try:
            f = view(frame.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self._errored = True
            return [MALFORMED]
        kind = f.type or frame.event or ""
        if kind == "content_block_delta":
            d = f.delta
            if d is None:
                return []
            t = d.type
            if t == "text_delta":
                return [TextDelta(d.text)] if d.text else []
            if t == "input_json_delta":
                k = self._blocks.get(f.index, -1)
                return (
                    [ToolCallDelta(k, arguments=d.partial_json)]
                    if d.partial_json and k >= 0
                    else []
                )
            if t == "thinking_delta":
                return [ReasoningDelta(d.thinking)] if d.thinking else []
            if t == "signature_delta":
                return [ReasoningDelta(signature=d.signature)] if d.signature else []
            return []  # citations_delta and newer kinds
        if kind == "content_block_start":
            return self._block_start(f.index, f.content_block)
        if kind == "message_start":
            m = f.message or MessageView()
            out: list[Event] = [Start(m.id, m.model)]
            if m.usage is not None:
                out.append(self._usage.update(m.usage, partial=True))
            return out
        if kind == "message_delta":
            out = []
            d = f.delta
            if d is not None and d.stop_reason:
                reason = FINISH_FROM_WIRE.get(d.stop_reason, "stop")
                out.append(Finish(reason, stop_sequence=d.stop_sequence))
            if f.usage is not None:
                out.append(self._usage.update(f.usage))
            return out
        if kind == "message_stop":
            self.done = True
        elif kind == "error":
            self._errored = True
            e = f.error or ErrorView()
            return [error_from_wire(e.type, e.message)]
        return []  # ping, content_block_stop, unknown events

    def _block_start(self, index: int, block: BlockView | None) -> list[Event]:
        if block is None:
            return []
        t = block.type
        if t == "tool_use":
            k = self._blocks[index] = self._tools
            self._tools += 1
            return [ToolCallDelta(k, block.id or None, block.name or None)]
        self._blocks[index] = -1
        if t == "text":
            return [TextDelta(block.text)] if block.text else []
        if t == "thinking":
            if block.thinking or block.signature:
                return [ReasoningDelta(block.thinking or "", block.signature or None)]
            return []
        if t == "redacted_thinking":
            return [ReasoningDelta(redacted=block.data)] if block.data else []
        return []

    def close(self) -> list[Event]:
        return [] if self.done or self._errored else [TRUNCATED]


# --- canonical events -> frames for an Anthropic client -----------------------------

_TEXT, _THINKING, _REDACTED, _TOOL = 1, 2, 3, 4


def _frame(event: str, data: bytes) -> bytes:
    return sse_encode(data, event=event)


class AnthropicStreamEncoder(InBandEnd):
    """Canonical events -> Messages stream frames for an Anthropic client.

    ``message_start`` goes out with the first event (input counts are 0 unless the
    first batch already carries usage; the real counts follow in ``message_delta``).
    A new kind of content closes the open block; a thinking block's signature is sent
    whole, as one ``signature_delta``, just before the block stops (the SDK keeps only
    the last one). Tool calls go through ``ToolCallSequencer``: one block per call,
    streamed live, never overlapping. ``message_delta`` and ``message_stop`` are the
    trailer written by ``close()``, once the upstream's usage is known. Only choice 0
    exists on this wire.
    """

    _error_frame = staticmethod(error_frame)

    def __init__(self, model: str, tally: Tally) -> None:
        self.tally = tally
        self.ended = False
        self._model = model
        self._id = ""
        self._open = 0  # the kind of the open block, 0 when none
        self._next = 0  # index of the next block
        self._delta = b""  # b'{"type":"content_block_delta","index":N,"delta":'
        self._signature: list[str] = []
        self._redacted: list[str] = []
        self._tools = ToolCallSequencer()
        self._stop_sequence: str | None = None

    def _start(self, events: list[Event]) -> bytes:
        self._id = new_message_id()
        usage: Usage | None = None
        for event in events:
            if isinstance(event, Start) and event.id.startswith("msg_"):
                self._id = event.id
            elif isinstance(event, Usage):
                usage = event
        wire = usage_to_wire(usage or Usage())
        wire["output_tokens"] = 0
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": wire,
        }
        return _frame("message_start", _json_encode({"type": "message_start", "message": message}))

    def _open_block(self, kind: int, block: bytes, out: list[bytes]) -> None:
        index = self._next
        self._next += 1
        self._open = kind
        self._delta = b'{"type":"content_block_delta","index":%d,"delta":' % index
        if kind == _REDACTED:  # its data is sent with the start, when the block closes
            return
        start = b'{"type":"content_block_start","index":%d,"content_block":' % index
        out.append(_frame("content_block_start", start + block + b"}"))

    def _close_block(self, out: list[bytes]) -> None:
        """Appends to ``out`` the frames that close the open block (one event each, as
        every frame this encoder writes)."""
        kind = self._open
        if not kind:
            return
        if kind == _TOOL:
            self._tool_ops(self._tools.flush(), out)
            return
        self._open = 0
        index = self._next - 1
        if kind == _THINKING and self._signature:
            sig = _json_encode("".join(self._signature))
            self._signature = []
            out.append(self._delta_frame(b'{"type":"signature_delta","signature":' + sig + b"}"))
        elif kind == _REDACTED:
            data = _json_encode("".join(self._redacted))
            self._redacted = []
            start = b'{"type":"content_block_start","index":%d,"content_block":' % index
            block = b'{"type":"redacted_thinking","data":' + data + b"}}"
            out.append(_frame("content_block_start", start + block))
        out.append(
            _frame("content_block_stop", b'{"type":"content_block_stop","index":%d}' % index)
        )

    def _delta_frame(self, delta: bytes) -> bytes:
        return _frame("content_block_delta", self._delta + delta + b"}")

    def _tool_ops(self, ops: list[Op], out: list[bytes]) -> None:
        for op in ops:
            if isinstance(op, Args):
                json = _json_encode(op.text)
                out.append(
                    self._delta_frame(b'{"type":"input_json_delta","partial_json":' + json + b"}")
                )
            elif isinstance(op, OpenCall):
                if self._open:
                    self._close_block(out)
                block = {
                    "type": "tool_use",
                    "id": tool_use_id(op.id),
                    "name": op.name or "",
                    "input": {},
                }
                self._open_block(_TOOL, _json_encode(block), out)
            elif isinstance(op, CloseCall):
                self._open = 0
                stop = b'{"type":"content_block_stop","index":%d}' % (self._next - 1)
                out.append(_frame("content_block_stop", stop))

    def encode(self, events: list[Event]) -> list[bytes]:
        out: list[bytes] = []
        tally = self.tally
        if not self._id and events:
            out.append(self._start(events))
        for event in events:
            if isinstance(event, TextDelta):
                if not event.text or event.choice:
                    continue
                tally.output_chars += len(event.text)
                if self._open != _TEXT:
                    self._close_block(out)
                    self._open_block(_TEXT, b'{"type":"text","text":""}', out)
                delta = b'{"type":"text_delta","text":' + _json_encode(event.text) + b"}"
                out.append(self._delta_frame(delta))
            elif isinstance(event, ToolCallDelta):
                if event.choice:
                    continue
                tally.output_chars += len(event.arguments)
                ops = self._tools.feed(event.index, event.id, event.name, event.arguments)
                self._tool_ops(ops, out)
            elif isinstance(event, ReasoningDelta):
                if not event.choice:
                    self._reasoning(event, out)
            elif isinstance(event, Finish):
                if not event.choice:
                    tally.finish_reason = event.reason
                    self._stop_sequence = event.stop_sequence
                    self._close_block(out)
            elif isinstance(event, Usage):
                tally.usage = event
            elif isinstance(event, Error):
                tally.error = event
                out.append(error_frame(event))
                self.ended = True
                break
        tally.started = tally.started or bool(out)
        return out

    def _reasoning(self, event: ReasoningDelta, out: list[bytes]) -> None:
        if event.text:
            self.tally.output_chars += len(event.text)
            # a thinking block ends with its signature: text after one starts a new block
            if self._open != _THINKING or self._signature:
                self._close_block(out)
                self._open_block(
                    _THINKING, b'{"type":"thinking","thinking":"","signature":""}', out
                )
            out.append(
                self._delta_frame(
                    b'{"type":"thinking_delta","thinking":' + _json_encode(event.text) + b"}"
                )
            )
        if event.signature:
            if self._open != _THINKING:
                self._close_block(out)
                self._open_block(
                    _THINKING, b'{"type":"thinking","thinking":"","signature":""}', out
                )
            self._signature.append(event.signature)
        if event.redacted:
            if self._open != _REDACTED:
                self._close_block(out)
                self._open_block(_REDACTED, b"", out)
            self._redacted.append(event.redacted)

    def close(self, cancelled: bool = False) -> list[bytes]:
        """The trailer: the open block's stop, ``message_delta`` with the stop reason and
        the usage, ``message_stop``. A stop by the user ends the same way (``end_turn``)."""
        if self.ended:
            return []
        self.ended = True
        out = [self._start([])] if not self._id else []
        self._close_block(out)
        stop = stop_to_wire(self.tally.finish_reason, self._stop_sequence)
        # what the request is charged: the upstream's counts, or the estimate
        usage = usage_to_wire(charged_usage(self.tally))
        delta = {"type": "message_delta", "delta": stop, "usage": usage}
        out.append(_frame("message_delta", _json_encode(delta)))
        out.append(_frame("message_stop", b'{"type":"message_stop"}'))
        return out


# --- the same-protocol passthrough ---------------------------------------------------

_MODEL = re.compile(r'"model"\s*:\s*"(?:[^"\\]|\\.)*"')


class AnthropicPassthrough(InBandEnd):
    """Upstream Messages frames -> the same frames for an Anthropic client.

    Each frame is forwarded as the upstream wrote it (whitespace padding, ``ping``,
    fields the canon does not know), with only the ``model`` of ``message_start``
    rewritten to the name the client asked for. Every frame is validated through a
    small view that also fills the tally; a malformed one ends the stream with an
    error frame instead of reaching the client's JSON parser.
    """

    payloads = False  # its frames' event names matter: whole ServerSentEvents

    _error_frame = staticmethod(error_frame)

    def __init__(self, model: str, tally: Tally) -> None:
        self.tally = tally
        self.ended = False
        self._done = False
        self._model = '"model":' + _json_encode(model).decode()
        self._usage = UsageState()
        self._open_block: int | None = None

    def encode(self, frames: list[ServerSentEvent]) -> list[bytes]:
        out: list[bytes] = []
        tally = self.tally
        for frame in frames:
            data = frame.data
            try:
                f = view(data)
            except msgspec.ValidationError:
                f = FrameView()  # valid JSON of an unexpected shape: forward, learn nothing
            except msgspec.DecodeError:
                tally.error = MALFORMED
                out.append(error_frame(MALFORMED))
                self.ended = True
                break
            kind = f.type or frame.event
            if kind == "content_block_start":
                self._open_block = f.index
            elif kind == "content_block_stop":
                self._open_block = None
            elif kind == "content_block_delta":
                d = f.delta
                if d is not None:
                    tally.output_chars += len(d.text or d.thinking or d.partial_json or "")
            elif kind == "message_start":
                if f.message is not None and f.message.usage is not None:
                    tally.usage = self._usage.update(f.message.usage, partial=True)
                data = _MODEL.sub(lambda _: self._model, data, count=1)
            elif kind == "message_delta":
                if f.delta is not None and f.delta.stop_reason:
                    tally.finish_reason = FINISH_FROM_WIRE.get(f.delta.stop_reason, "stop")
                if f.usage is not None:
                    tally.usage = self._usage.update(f.usage)
            elif kind == "message_stop":
                self._done = True
            out.append(sse_encode(data, event=frame.event))
            if kind == "error":  # forwarded as written; it ends the stream
                e = f.error or ErrorView()
                tally.error = error_from_wire(e.type, e.message)
                self.ended = True
                break
        if out:
            tally.started = True
        return out

    def close(self, cancelled: bool = False) -> list[bytes]:
        """Nothing after ``message_stop``; an error frame if the upstream stopped short.
        A stop by the user closes the open block and ends the message (``end_turn``)."""
        if self.ended:
            return []
        self.ended = True
        if self._done or self.tally.error:
            return []
        if not cancelled:
            self.tally.error = TRUNCATED
            return [error_frame(TRUNCATED)]
        out: list[bytes] = []
        if self._open_block is not None:
            stop = b'{"type":"content_block_stop","index":%d}' % self._open_block
            out.append(_frame("content_block_stop", stop))
        tally = self.tally
        tally.finish_reason = tally.finish_reason or "stop"
        usage = usage_to_wire(charged_usage(tally))
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": usage,
        }
        out.append(_frame("message_delta", _json_encode(delta)))
        out.append(_frame("message_stop", b'{"type":"message_stop"}'))
        return out
