"""The same-protocol passthrough: a Responses client on a Responses upstream.

Each event is forwarded as the upstream wrote it (its ``event:`` name, ``obfuscation``,
``logprobs``, items of built-in tools, fields newer than this code), with only the
``model`` of the ``response`` objects rewritten to the name the client asked for. Each
event is validated through a small view that also fills the tally; a malformed one ends
the stream with an ``error`` event instead of reaching the client's JSON parser.

It works on each event's name and data as bytes (``Upstream.named()``): an event that is
forwarded as it came (every delta) is not made into ``str`` and back, and no regex
touches it; only the few events that carry a ``response`` object are rewritten. An
event with invalid UTF-8 in it is forwarded with U+FFFD in its place.

A background response (``Tally.response_id`` set: its id was given to the client before
the upstream was called) differs in three ways: its ``response`` objects carry that id
instead of the upstream's; its events are numbered 0, 1, 2, ... whatever the upstream's
numbers (only a number that differs is rewritten), so that ``starting_after`` names a
position in the hub's stream; and a stop ends it ``cancelled`` with the items that were
done before it (``server/background.py``).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from ...events import ChatRequest, Error
from ...fold import Tally, charged_usage
from ...sse import encode as sse_encode
from ..base import InBandEnd
from .decoder import TERMINAL
from .wire import (
    FINISH_FROM_INCOMPLETE,
    MALFORMED,
    TRUNCATED,
    error_event,
    error_from_wire,
    json_decode,
    json_encode,
    state_echo,
    usage_from_wire,
    usage_to_wire,
)


class _ResponseView(msgspec.Struct):
    id: str = ""
    status: str | None = None
    usage: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class _View(msgspec.Struct):
    type: str = ""
    delta: str | None = None
    sequence_number: int | None = None
    item: dict[str, Any] | None = None
    response: _ResponseView | None = None
    code: Any = None
    message: str | None = None


_view = msgspec.json.Decoder(_View).decode
_MODEL = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')
_SEQUENCE = re.compile(rb'"sequence_number"\s*:\s*\d+')
_STATE = re.compile(
    rb'"(store|previous_response_id|background)"\s*:\s*(?:true|false|null|"(?:[^"\\]|\\.)*")'
)


class _Constant:
    """A ``re.sub`` replacement taken literally (a model name may hold backslashes)."""

    __slots__ = ("text",)

    def __init__(self, text: bytes) -> None:
        self.text = text

    def __call__(self, _: re.Match[bytes]) -> bytes:
        return self.text


class ResponsesPassthrough(InBandEnd):
    """Upstream Responses events -> the same events for a Responses client."""

    payloads = False
    named = True  # encode() takes (event name, data) bytes: the names matter

    def __init__(self, model: str, tally: Tally, request: ChatRequest | None = None) -> None:
        self.tally = tally
        # the state fields of a Responses client's request are the gateway's (the
        # upstream was called with store: false); other requests' are left as written
        self._echo = state_echo(request)
        self._state = {
            k.encode(): b'"%b":%b' % (k.encode(), json_encode(v)) for k, v in self._echo.items()
        }
        self.ended = False
        self._done = False
        self._model = b'"model":' + json_encode(model)
        self._seq = 0  # the next sequence number, after the upstream's last
        self._id = ""  # the upstream's response id
        self._calls = False
        self._own = tally.response_id  # a background response's id (the module docstring)
        self._ids: tuple[bytes, bytes] | None = None  # (upstream's, ours) as JSON strings
        self._snapshot: dict[str, Any] = {}  # the last response object before the end
        self._items: list[dict[str, Any]] = []  # the items done, in order

    def encode(self, frames: list[tuple[bytes | None, bytes]]) -> list[bytes]:
        out: list[bytes] = []
        tally = self.tally
        for event, data in frames:
            if not data.isascii():
                try:
                    data.decode()
                except UnicodeDecodeError:  # the client gets valid UTF-8 whatever came
                    data = data.decode("utf-8", "replace").encode()
            try:
                e = _view(data)
            except msgspec.ValidationError:
                e = _View()  # valid JSON of an unexpected shape: forward, learn nothing
            except msgspec.DecodeError:
                out.extend(self.fail(MALFORMED))
                break
            kind = e.type or (event.decode("utf-8", "replace") if event else "")
            if self._own is not None:
                data = self._background(data, e, kind)
            elif e.sequence_number is not None:
                self._seq = e.sequence_number + 1
            if e.delta is not None:
                tally.output_chars += len(e.delta)
            elif (
                kind == "response.output_item.added"
                and (e.item or {}).get("type") == "function_call"
            ):
                self._calls = True
            if e.response is not None:
                self._id = self._id or e.response.id
                if self._state:
                    data = _STATE.sub(lambda m: self._state.get(m.group(1), m.group(0)), data)
                model = self._model + b"".join(
                    b"," + v for k, v in self._state.items() if b'"%b"' % k not in data
                )  # and the state fields the upstream left out
                data = _MODEL.sub(_Constant(model), data, count=1)
                if kind in TERMINAL:
                    self._end(kind, e.response, data)
                elif self._own is not None:  # (two events: created, in_progress)
                    found = json_decode(data).get("response")
                    self._snapshot = found if isinstance(found, dict) else self._snapshot
            if event is not None and event.isascii() and b"\n" not in data and b"\r" not in data:
                out.append(b"event: %b\ndata: %b\n\n" % (event, data))  # as it came
            else:
                name = event.decode("utf-8", "replace") if event is not None else None
                out.append(sse_encode(data, event=name))
            if kind == "error":  # forwarded as written; it ends the stream
                tally.error = error_from_wire({"code": e.code, "message": e.message})
                self.ended = True
                break
        if out:
            tally.started = True
        return out

    def _background(self, data: bytes, e: _View, kind: str) -> bytes:
        """A background response's event: numbered in turn, with the gateway's id; the
        items done kept for the end a stop gives it."""
        seq = self._seq
        self._seq += 1
        if e.sequence_number is not None and e.sequence_number != seq:
            data = _SEQUENCE.sub(b'"sequence_number":%d' % seq, data, count=1)
        if e.response is not None:
            if self._ids is None and e.response.id:
                assert self._own is not None
                self._ids = (json_encode(e.response.id), json_encode(self._own))
            if self._ids is not None:
                data = data.replace(*self._ids)
        elif kind == "response.output_item.done" and e.item is not None:
            self._items.append(e.item)
        return data

    def _end(self, kind: str, response: _ResponseView, data: bytes) -> None:
        self._done = True
        tally = self.tally
        final = json_decode(data).get("response")  # once a stream, for the stored state
        tally.final = final if isinstance(final, dict) else None
        usage = usage_from_wire(response.usage)
        if usage is not None:
            tally.usage = usage
        if kind == "response.failed":
            tally.error = error_from_wire(response.error or {"message": "response failed"})
        elif kind == "response.incomplete":
            reason = (response.incomplete_details or {}).get("reason")
            tally.finish_reason = FINISH_FROM_INCOMPLETE.get(str(reason), "length")
        else:
            tally.finish_reason = "tool_calls" if self._calls else "stop"

    def fail(self, error: Error) -> list[bytes]:
        if self.ended:
            return []
        self.ended = True
        self.tally.error = error
        self._seq += 1
        return [error_event(error, self._seq - 1)]

    def close(self, cancelled: bool = False) -> list[bytes]:
        """Nothing after the terminal event; an ``error`` event if the upstream stopped
        short. A stop by the user ends with ``response.incomplete`` (reason
        ``cancelled``): the output so far was the upstream's and was forwarded; a
        background response's says status ``cancelled``, with the items done so far."""
        if self.ended:
            return []
        if self._done or self.tally.error:
            self.ended = True
            return []
        if not cancelled:
            return self.fail(TRUNCATED)
        self.ended = True
        self.tally.finish_reason = self.tally.finish_reason or "stop"
        response: dict[str, Any] = {
            "id": self._id,
            "object": "response",
            "status": "incomplete",
            "incomplete_details": {"reason": "cancelled"},
        }
        if self._own is not None:
            response = {
                **self._snapshot,
                "id": self._own,
                "object": "response",
                "status": "cancelled",
                "incomplete_details": None,
                "output": self._items,
                "usage": usage_to_wire(charged_usage(self.tally)),
                **self._echo,
            }
        self.tally.final = response
        data = {"type": "response.incomplete", "response": response, "sequence_number": self._seq}
        return [sse_encode(json_encode(data), event="response.incomplete")]
