"""The timeouts of one request on one timer: total, first token, idle.

A request used to carry three: ``asyncio.timeout`` around opening each attempt, another
around the whole stream, and a watchdog per attempt for its reads; ~16 µs of timer
handles, ``Timeout`` objects and loop look-ups per request before its first token.
One ``Watchdog`` per request now keeps them all on one timer, set when an attempt
begins for the earliest moment anything could expire (the attempt's first-token or idle
limit, or the total, whichever is least) and moved only when it fires early; a read
(``touch()``) only stores the time.
"""

from __future__ import annotations

import asyncio

FIRST_TOKEN, IDLE, TOTAL = "first_token", "idle", "total"


class Watchdog:
    """Cancels the task it watches when too long passes: ``total`` seconds from its
    creation; in each attempt (``attempt()``), ``first`` seconds from the attempt's start
    to its first read (``touch()``), then ``idle`` seconds between reads. ``None``: no
    limit. ``expired()`` tells a cancellation of its own from any other."""

    __slots__ = (
        "_end",
        "_fired",
        "_handle",
        "_idle",
        "_last",
        "_limit",
        "_loop",
        "_task",
        "fired_limit",
        "total",
        "touched",
    )

    def __init__(self, total: float | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        now = self._loop.time()
        self.total = total
        self._end = now + total if total is not None else None
        self._last = now
        self._limit: float | None = None  # of the phase in course
        self._idle: float | None = None
        self._fired: str | None = None
        self._handle: asyncio.TimerHandle | None = None
        self.touched = False
        self.fired_limit: float | None = None  # the limit that fired last (for its message)

    def watch(self, task: asyncio.Task[object] | None) -> None:
        """Cancel ``task`` from now on (the one that reads the upstream)."""
        self._task = task

    def attempt(self, first: float | None, idle: float | None) -> None:
        """An attempt begins: its first-token clock starts now."""
        now = self._last = self._loop.time()
        self._limit, self._idle = first, idle
        self.touched = False
        soonest = min((x for x in (first, idle) if x is not None), default=None)
        due = now + soonest if soonest is not None else None
        if self._end is not None and (due is None or self._end < due):
            due = self._end
        handle = self._handle
        if due is not None and (handle is None or due < handle.when()):
            if handle is not None:
                handle.cancel()
            self._handle = self._loop.call_at(due, self._check)

    def touch(self) -> None:
        """A read: the idle clock starts again (the timer is not moved: when it fires,
        it is set again for what is then due)."""
        self._last = self._loop.time()
        if not self.touched:
            self.touched = True
            self._limit = self._idle

    @property
    def limit(self) -> float | None:
        """The limit of the phase in course (first token or idle)."""
        return self._limit

    def _due(self) -> float | None:
        due = self._last + self._limit if self._limit is not None else None
        if self._end is not None and (due is None or self._end < due):
            return self._end
        return due

    def _arm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        due = self._due()
        self._handle = self._loop.call_at(due, self._check) if due is not None else None

    def _check(self) -> None:
        self._handle = None
        now = self._loop.time()
        if self._end is not None and now >= self._end:
            self._fire(TOTAL)
        elif self._limit is not None and now >= self._last + self._limit:
            self._fire(IDLE if self.touched else FIRST_TOKEN)
        else:
            self._arm()

    def _fire(self, which: str) -> None:
        self._fired = which
        self.fired_limit = self.total if which == TOTAL else self._limit
        if self._task is not None:
            self._task.cancel()

    def expired(self) -> str | None:
        """``FIRST_TOKEN``, ``IDLE`` or ``TOTAL`` when the cancellation being handled is
        this watchdog's (it is taken back); ``None`` for any other."""
        which, self._fired = self._fired, None
        if which is None or self._task is None or self._task.uncancel() != 0:
            return None
        if which != TOTAL:
            self._limit = None  # until a next attempt: the total only
            self._arm()
        return which

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
