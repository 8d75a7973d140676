"""A Responses upstream's event stream -> canonical events.

Text comes from ``response.output_text.delta`` (and ``response.refusal.delta``);
reasoning from the summary and reasoning-text deltas (summary parts after the first
are separated by a blank line), its ``encrypted_content`` from the reasoning item's
``response.output_item.done`` (the final value: the ``.added`` one may differ) as the
canonical signature; function calls are numbered in order of appearance (the k-th
``function_call`` item is tool call k, its ``call_id`` the call's id). The terminal
event gives the finish reason (``tool_calls`` when the output has calls), the usage, and
a last ``Start`` carrying the final ``response`` object (``wire.FINAL``).
Events of items the canon cannot hold (built-in tool calls) are skipped.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ...events import Event, Finish, ReasoningDelta, Start, TextDelta, ToolCallDelta
from ...sse import ServerSentEvent
from .wire import (
    FINAL,
    FINISH_FROM_INCOMPLETE,
    MALFORMED,
    TRUNCATED,
    error_from_wire,
    usage_from_wire,
)


class _ItemView(msgspec.Struct):
    type: str = ""
    id: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    encrypted_content: str | None = None


class _EventView(msgspec.Struct):
    """The fields of any Responses event the decoder reads; the rest is skipped."""

    type: str = ""
    delta: str | None = None
    output_index: int = 0
    summary_index: int = 0
    item: _ItemView | None = None
    response: dict[str, Any] | None = None
    code: Any = None
    message: str | None = None
    param: str | None = None


view = msgspec.json.Decoder(_EventView).decode

_TEXT = frozenset({"response.output_text.delta", "response.refusal.delta"})
_REASONING = frozenset({"response.reasoning_summary_text.delta", "response.reasoning_text.delta"})
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesStreamDecoder:
    """Responses events -> canonical events (see the module docstring)."""

    __slots__ = ("_calls", "_errored", "_started", "done")

    def __init__(self) -> None:
        self.done = False
        self._errored = False
        self._started = False
        self._calls: dict[int, int] = {}  # output_index -> tool call index

    def feed(self, frame: ServerSentEvent) -> list[Event]:
        try:
            e = view(frame.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self._errored = True
            return [MALFORMED]
        kind = e.type or frame.event or ""
        if kind in _TEXT:
            return [TextDelta(e.delta)] if e.delta else []
        if kind == "response.function_call_arguments.delta":
            k = self._calls.get(e.output_index)
            return [ToolCallDelta(k, arguments=e.delta)] if e.delta and k is not None else []
        if kind in _REASONING:
            return [ReasoningDelta(e.delta)] if e.delta else []
        if kind == "response.reasoning_summary_part.added":
            return [ReasoningDelta("\n\n")] if e.summary_index > 0 else []
        if kind == "response.output_item.added":
            item = e.item
            if item is not None and item.type == "function_call":
                k = self._calls[e.output_index] = len(self._calls)
                out: list[Event] = [ToolCallDelta(k, item.call_id or item.id, item.name or "")]
                if item.arguments:
                    out.append(ToolCallDelta(k, arguments=item.arguments))
                return out
            return []
        if kind == "response.output_item.done":
            item = e.item
            if item is not None and item.type == "reasoning" and item.encrypted_content:
                return [ReasoningDelta(signature=item.encrypted_content)]
            return []
        if kind == "response.created":
            self._started = True
            r = e.response or {}
            return [
                Start(
                    str(r.get("id") or ""), str(r.get("model") or ""), int(r.get("created_at") or 0)
                )
            ]
        if kind in TERMINAL:
            return self._end(kind, e.response or {})
        if kind == "error":
            self._errored = True
            raw = {"code": e.code, "message": e.message or "upstream error", "param": e.param}
            return [error_from_wire(raw)]
        return []

    def _end(self, kind: str, response: dict[str, Any]) -> list[Event]:
        self.done = True
        usage = usage_from_wire(response.get("usage"))
        out: list[Event] = [usage] if usage is not None else []
        if kind == "response.failed":
            self._errored = True
            out.append(error_from_wire(response.get("error") or {"message": "response failed"}))
        else:
            r = response
            out.append(Start(str(r.get("id") or ""), str(r.get("model") or ""), extra={FINAL: r}))
            details = response.get("incomplete_details")
            reason = details.get("reason") if isinstance(details, dict) else None
            finish = "stop"
            if kind == "response.incomplete":
                finish = FINISH_FROM_INCOMPLETE.get(str(reason), "length")
            if finish == "stop" and self._calls:
                finish = "tool_calls"
            out.append(Finish(finish))
        return out

    def close(self) -> list[Event]:
        return [] if self.done or self._errored else [TRUNCATED]
