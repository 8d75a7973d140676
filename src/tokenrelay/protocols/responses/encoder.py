"""Canonical events -> a Responses event stream, for a Responses client.

The stream is the real one (``openai`` SDK ``ResponseStreamEvent``): ``response.created``
and ``response.in_progress`` first; then output items that never overlap, each
``response.output_item.added`` ... ``.done`` at its own ``output_index``: a
``reasoning`` item (summary part events, its ``encrypted_content`` on ``.done``), a
``message`` item (one ``output_text`` content part), one ``function_call`` item per
call; then ``response.completed`` or ``response.incomplete`` with the whole output and
the usage. Every event has the next ``sequence_number``. Tool-call fragments go through
``ToolCallSequencer`` (items cannot interleave). Only choice 0 exists on this wire.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ...events import (
    ChatRequest,
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
from ..base import InBandEnd
from ..blocks import Args, CloseCall, Op, OpenCall, ToolCallSequencer
from .request import CUSTOM_INPUT
from .wire import (
    ENCRYPTED,
    Envelope,
    error_event,
    frame,
    json_decode,
    json_encode,
    name,
    new_id,
    status_of,
)

_MESSAGE, _REASONING, _CALL = "message", "reasoning", "function_call"
_CUSTOM = "custom_tool_call"


def custom_tools(request: ChatRequest | None) -> frozenset[str]:
    """The names of the client's custom (free-form) tools: the upstream saw them as
    function tools taking one string, ``input`` (``DROPPED``); their calls go back to
    the client as ``custom_tool_call`` items with that string."""
    source = request.source if request is not None else None
    if source is None or source.protocol != name or not isinstance(source.body.get("tools"), list):
        return frozenset()
    return frozenset(
        t["name"]
        for t in source.body["tools"]
        if isinstance(t, dict) and t.get("type") == "custom" and isinstance(t.get("name"), str)
    )


def custom_input(arguments: str) -> str:
    """The free-form input of a custom tool call from its function-call arguments."""
    try:
        value = json_decode(arguments) if arguments.strip() else {}
    except msgspec.DecodeError:
        return arguments
    found = value.get(CUSTOM_INPUT) if isinstance(value, dict) else None
    return found if isinstance(found, str) else arguments


def wants_encrypted(request: ChatRequest | None) -> bool:
    """True when the client's ``include`` asks for reasoning's ``encrypted_content``."""
    source = request.source if request is not None else None
    if source is None or source.protocol != name:
        return False
    include = source.body.get("include")
    return isinstance(include, list) and ENCRYPTED in include


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


class _Item:
    """One output item being streamed."""

    __slots__ = ("call_id", "id", "index", "kind", "name", "pieces", "signature", "summary", "tail")

    def __init__(self, kind: str, id: str, index: int) -> None:
        self.kind = kind
        self.id = id
        self.index = index
        self.pieces: list[str] = []  # text, summary text or arguments so far
        self.signature: list[str] = []
        self.summary = False  # a reasoning summary part is open
        self.call_id = ""
        self.name = ""
        # the end of every delta of this item, up to the sequence number
        extra = {_MESSAGE: b',"logprobs":[]', _REASONING: b',"summary_index":0'}.get(kind, b"")
        self.tail = b',"item_id":"%s","output_index":%d%s,"sequence_number":' % (
            id.encode(),
            index,
            extra,
        )

    def done(self, encrypted: bool) -> dict[str, Any]:
        """The item as ``response.output_item.done`` (and the final output) give it."""
        text = "".join(self.pieces)
        if self.kind == _MESSAGE:
            return {
                "id": self.id,
                "type": "message",
                "status": "completed",
                "content": [_text_part(text)],
                "role": "assistant",
            }
        if self.kind == _CUSTOM:
            return {
                "id": self.id,
                "type": _CUSTOM,
                "status": "completed",
                "call_id": self.call_id,
                "input": custom_input(text),
                "name": self.name,
            }
        if self.kind == _CALL:
            return {
                "id": self.id,
                "type": "function_call",
                "status": "completed",
                "arguments": text,
                "call_id": self.call_id,
                "name": self.name,
            }
        item: dict[str, Any] = {
            "id": self.id,
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": text}] if self.pieces else [],
        }
        if encrypted:
            item["encrypted_content"] = "".join(self.signature) or None
        return item


class ResponsesStreamEncoder(InBandEnd):
    """Canonical events -> Responses events (see the module docstring)."""

    def __init__(self, model: str, request: ChatRequest | None, tally: Tally) -> None:
        self.tally = tally
        self.ended = False
        self.envelope = Envelope(model, request, tally.response_id)
        self.encrypted = wants_encrypted(request)
        self.custom = custom_tools(request)
        self._seq = 0
        self._begun = False
        self._next = 0  # the output_index of the next item
        self._output: dict[int, dict[str, Any]] = {}  # finished items, by output_index
        self._open: _Item | None = None  # the open message or reasoning item
        self._calls: dict[int, _Item] = {}  # sequencer key -> its function_call item
        self._tools = ToolCallSequencer()

    # --- framing ------------------------------------------------------------------------

    def _event(self, kind: str, fields: dict[str, Any]) -> bytes:
        data = {"type": kind, **fields, "sequence_number": self._seq}
        self._seq += 1
        return frame(kind, json_encode(data))

    def _delta(self, kind: bytes, head: bytes, text: str, item: _Item) -> bytes:
        seq = self._seq
        self._seq += 1
        data = b'{"type":"' + kind + b'"' + head + b',"delta":' + json_encode(text)
        return b"event: " + kind + b"\ndata: " + data + item.tail + b"%d}\n\n" % seq

    def _begin(self, out: list[bytes], start: Start | None = None) -> None:
        if self._begun:
            return
        self._begun = True
        if start is not None and start.id.startswith("resp_") and not self.tally.response_id:
            self.envelope.id = start.id
        response = self.envelope.response("in_progress", [])
        out.append(self._event("response.created", {"response": response}))
        out.append(self._event("response.in_progress", {"response": response}))

    # --- items --------------------------------------------------------------------------

    def _new_item(self, out: list[bytes], kind: str, prefix: str) -> _Item:
        """A new item at the next ``output_index``; a message or reasoning item is
        announced here, a call by ``_tool_ops`` (which knows its id and name)."""
        item = _Item(kind, new_id(prefix), self._next)
        self._next += 1
        if kind == _MESSAGE:
            added: dict[str, Any] = {
                "id": item.id,
                "type": "message",
                "status": "in_progress",
                "content": [],
                "role": "assistant",
            }
        elif kind == _REASONING:
            added = {"id": item.id, "type": "reasoning", "summary": []}
            if self.encrypted:
                added["encrypted_content"] = None
        else:
            return item
        out.append(
            self._event("response.output_item.added", {"item": added, "output_index": item.index})
        )
        if kind == _MESSAGE:
            part = {
                "content_index": 0,
                "item_id": item.id,
                "output_index": item.index,
                "part": _text_part(""),
            }
            out.append(self._event("response.content_part.added", part))
        return item

    def _close_open(self, out: list[bytes]) -> None:
        """Close the open message or reasoning item, and any tool calls."""
        item = self._open
        if item is None:
            if self._calls or self._tools.live is not None:
                self._tool_ops(out, self._tools.flush())
            return
        self._open = None
        text = "".join(item.pieces)
        where = {"item_id": item.id, "output_index": item.index}
        if item.kind == _MESSAGE:
            out.append(
                self._event(
                    "response.output_text.done",
                    {"content_index": 0, **where, "logprobs": [], "text": text},
                )
            )
            out.append(
                self._event(
                    "response.content_part.done",
                    {"content_index": 0, **where, "part": _text_part(text)},
                )
            )
        elif item.summary:
            out.append(
                self._event(
                    "response.reasoning_summary_text.done",
                    {**where, "summary_index": 0, "text": text},
                )
            )
            part = {"type": "summary_text", "text": text}
            out.append(
                self._event(
                    "response.reasoning_summary_part.done",
                    {**where, "part": part, "summary_index": 0},
                )
            )
        self._finish_item(out, item)

    def _finish_item(self, out: list[bytes], item: _Item) -> None:
        done = item.done(self.encrypted)
        self._output[item.index] = done
        out.append(
            self._event("response.output_item.done", {"item": done, "output_index": item.index})
        )

    def _tool_ops(self, out: list[bytes], ops: list[Op]) -> None:
        for op in ops:
            if isinstance(op, Args):
                item = self._calls[op.key]
                item.pieces.append(op.text)
                if item.kind == _CALL:  # a custom tool's input goes out whole, at its end
                    out.append(
                        self._delta(b"response.function_call_arguments.delta", b"", op.text, item)
                    )
            elif isinstance(op, OpenCall):
                if self._open is not None:
                    self._close_open(out)
                custom = (op.name or "") in self.custom
                item = self._new_item(out, _CUSTOM if custom else _CALL, "ctc" if custom else "fc")
                self._calls[op.key] = item
                item.call_id = op.id or new_id("call")
                item.name = op.name or ""
                added = {
                    "id": item.id,
                    "type": item.kind,
                    "status": "in_progress",
                    "call_id": item.call_id,
                    "name": item.name,
                }
                added["input" if custom else "arguments"] = ""
                out.append(
                    self._event(
                        "response.output_item.added", {"item": added, "output_index": item.index}
                    )
                )
            elif isinstance(op, CloseCall):
                item = self._calls.pop(op.key)
                if item.kind == _CUSTOM:
                    self._custom_done(out, item)
                    continue
                done = {
                    "arguments": "".join(item.pieces),
                    "item_id": item.id,
                    "output_index": item.index,
                }
                out.append(self._event("response.function_call_arguments.done", done))
                self._finish_item(out, item)

    def _custom_done(self, out: list[bytes], item: _Item) -> None:
        text = custom_input("".join(item.pieces))
        where = {"item_id": item.id, "output_index": item.index}
        out.append(self._event("response.custom_tool_call_input.delta", {"delta": text, **where}))
        out.append(self._event("response.custom_tool_call_input.done", {"input": text, **where}))
        self._finish_item(out, item)

    def _opened(self, out: list[bytes], kind: str) -> _Item:
        item = self._open
        if item is not None and item.kind == kind:
            return item
        self._close_open(out)
        item = self._open = self._new_item(out, kind, "msg" if kind == _MESSAGE else "rs")
        return item

    # --- events -------------------------------------------------------------------------

    def encode(self, events: list[Event]) -> list[bytes]:
        out: list[bytes] = []
        tally = self.tally
        if not self._begun and events:
            first = events[0]
            self._begin(out, first if isinstance(first, Start) else None)
        for event in events:
            if isinstance(event, TextDelta):
                if not event.text or event.choice:
                    continue
                tally.output_chars += len(event.text)
                item = self._opened(out, _MESSAGE)
                item.pieces.append(event.text)
                out.append(
                    self._delta(
                        b"response.output_text.delta", b',"content_index":0', event.text, item
                    )
                )
            elif isinstance(event, ToolCallDelta):
                if event.choice:
                    continue
                tally.output_chars += len(event.arguments)
                if self._open is not None:
                    self._close_open(out)
                ops = self._tools.feed(event.index, event.id, event.name, event.arguments)
                self._tool_ops(out, ops)
            elif isinstance(event, ReasoningDelta):
                if not event.choice:
                    self._reasoning(out, event)
            elif isinstance(event, Finish):
                if not event.choice:
                    tally.finish_reason = event.reason
                    self._close_open(out)
            elif isinstance(event, Usage):
                tally.usage = event
            elif isinstance(event, Error):
                out.extend(self.fail(event))
                break
        if out:
            tally.started = True
        return out

    def _reasoning(self, out: list[bytes], event: ReasoningDelta) -> None:
        if event.text:
            self.tally.output_chars += len(event.text)
            item = self._open
            # a reasoning item ends with its signature: text after one starts a new item
            if item is None or item.kind != _REASONING or item.signature:
                self._close_open(out)
                item = self._open = self._new_item(out, _REASONING, "rs")
            if not item.summary:
                item.summary = True
                part = {
                    "item_id": item.id,
                    "output_index": item.index,
                    "part": {"type": "summary_text", "text": ""},
                    "summary_index": 0,
                }
                out.append(self._event("response.reasoning_summary_part.added", part))
            item.pieces.append(event.text)
            out.append(self._delta(b"response.reasoning_summary_text.delta", b"", event.text, item))
        if event.signature:
            item = self._opened(out, _REASONING)
            item.signature.append(event.signature)
        # redacted reasoning (Anthropic's redacted_thinking) has no slot here: DROPPED

    # --- the end ------------------------------------------------------------------------

    def _outcome(self) -> list[dict[str, Any]]:
        return [self._output[i] for i in sorted(self._output)]

    def close(self, cancelled: bool = False) -> list[bytes]:
        """``response.completed`` (or ``.incomplete`` after a length or content-filter
        stop) with the whole output and the usage; a stop by the user ends completed,
        except a background response's: ``response.incomplete`` with status
        ``cancelled`` (the API has no ``response.cancelled`` event)."""
        if self.ended:
            return []
        self.ended = True
        out: list[bytes] = []
        self._begin(out)
        self._close_open(out)
        tally = self.tally
        if cancelled:
            tally.finish_reason = tally.finish_reason or "stop"
        status, incomplete = status_of(tally.finish_reason)
        kind = f"response.{status}"
        if cancelled and self.envelope.echo.get("background"):
            status, incomplete, kind = "cancelled", None, "response.incomplete"
        usage = charged_usage(tally)
        response = self.envelope.response(status, self._outcome(), usage, incomplete)
        tally.final = response
        out.append(self._event(kind, {"response": response}))
        return out

    def fail(self, error: Error) -> list[bytes]:
        """An ``error`` event, then ``response.failed`` with what was produced so far."""
        if self.ended:
            return []
        self.ended = True
        self.tally.error = error
        out: list[bytes] = []
        self._begin(out)
        out.append(error_event(error, self._seq))
        self._seq += 1
        failure = {"code": error.code or "server_error", "message": error.message}
        response = self.envelope.response(
            "failed", self._outcome(), self.tally.usage, None, failure
        )
        self.tally.final = response
        out.append(self._event("response.failed", {"response": response}))
        return out
