"""Delta bookkeeping shared by encoders whose wire has sequential, non-overlapping content
blocks (Anthropic ``content_block_*``; the same shape as other "output item" streams).

The canon lets tool-call fragments of several calls arrive interleaved
(``ToolCallDelta`` indices 0, 1, 0, 1, ...). A block wire cannot express that: one block
is open at a time. ``ToolCallSequencer`` turns the fragments into a sequence of calls
that never overlap, streaming live whenever the upstream is sequential (every real
upstream is) and buffering only when it really interleaves.

The rule that keeps it both live and correct: a call is known to be complete when its
arguments so far form a whole JSON document (a proper prefix of a JSON object never
does). So when a fragment of another call arrives:

- if the live call's arguments are complete, it closes and the new call goes live;
- otherwise the calls interleave: the new call is queued (id, name and arguments kept)
  and goes live, whole, as soon as the live one completes, or at ``flush``.

A fragment for a call that has already been closed can only make its arguments invalid
JSON; it is dropped (empty and whitespace-only fragments are harmless by definition).
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

__all__ = ["Args", "CloseCall", "Op", "OpenCall", "ToolCallSequencer"]


class OpenCall(NamedTuple):
    """Open a block for call ``key`` (the canonical tool-call index)."""

    key: int
    id: str | None
    name: str | None


class Args(NamedTuple):
    """An arguments fragment for the call that is open."""

    key: int
    text: str


class CloseCall(NamedTuple):
    key: int


Op = OpenCall | Args | CloseCall

_decode = msgspec.json.decode


def _complete(parts: list[str]) -> bool:
    """True when the fragments form one whole JSON document."""
    try:
        _decode("".join(parts))
    except msgspec.DecodeError:
        return False
    return True


class _Queued:
    __slots__ = ("arguments", "id", "name")

    def __init__(self, id: str | None, name: str | None, arguments: str) -> None:
        self.id = id
        self.name = name
        self.arguments = [arguments] if arguments else []


class ToolCallSequencer:
    """Interleaved tool-call fragments in, non-overlapping open/args/close operations out.

    Pure state, no I/O. ``live`` is the key of the call whose block is open, if any.
    """

    __slots__ = ("_args", "_done", "_queue", "live")

    def __init__(self) -> None:
        self.live: int | None = None
        self._args: list[str] = []
        self._queue: dict[int, _Queued] = {}
        self._done: set[int] = set()

    def feed(self, key: int, id: str | None, name: str | None, arguments: str) -> list[Op]:
        """One fragment of call ``key``; ``id``/``name`` come with its first fragment."""
        live = self.live
        if key == live:
            if not arguments:
                return []
            self._args.append(arguments)
            ops: list[Op] = [Args(key, arguments)]
            if self._queue and _complete(self._args):
                self._close_live(ops)
                self._promote(ops)
            return ops
        queued = self._queue.get(key)
        if queued is not None:
            queued.id = queued.id or id
            queued.name = queued.name or name
            if arguments:
                queued.arguments.append(arguments)
            return []
        if key in self._done:
            return []  # late fragment of a closed call: see the module docstring
        ops = []
        if live is not None:
            if not _complete(self._args):
                self._queue[key] = _Queued(id, name, arguments)
                return ops
            self._close_live(ops)
        self._open(ops, key, id, name, [arguments] if arguments else [])
        return ops

    def flush(self) -> list[Op]:
        """Close the live call and emit every queued call whole (something other than a
        tool call comes next, or the stream ends)."""
        ops: list[Op] = []
        if self.live is not None:
            self._close_live(ops)
        while self._queue:
            self._promote(ops)
            self._close_live(ops)
        return ops

    def _open(
        self, ops: list[Op], key: int, id: str | None, name: str | None, args: list[str]
    ) -> None:
        self.live = key
        self._args = args
        ops.append(OpenCall(key, id, name))
        if args:
            ops.append(Args(key, "".join(args)))

    def _close_live(self, ops: list[Op]) -> None:
        assert self.live is not None
        ops.append(CloseCall(self.live))
        self._done.add(self.live)
        self.live = None
        self._args = []

    def _promote(self, ops: list[Op]) -> None:
        """Open the oldest queued call; close it again at once if it is already complete
        and others wait behind it."""
        while self._queue:
            key = next(iter(self._queue))
            queued = self._queue.pop(key)
            self._open(ops, key, queued.id, queued.name, queued.arguments)
            if not (self._queue and _complete(self._args)):
                return
            self._close_live(ops)
