"""The watchdog of one upstream attempt: first-token and idle timeouts without a timer
rescheduled on every read."""

from __future__ import annotations

import asyncio


class Watchdog:
    """Cancels the current task when an upstream is silent too long: ``first`` seconds
    before its first read, ``idle`` seconds between reads. ``touch()`` on each read only
    stores the time; the timer wakes once per period, not once per read."""

    def __init__(self, first: float | None, idle: float | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._limit = first
        self._idle = idle
        self._last = self._loop.time()
        self._fired = False
        self.touched = False
        self._handle = (
            self._loop.call_at(self._last + first, self._check) if first is not None else None
        )

    def touch(self) -> None:
        self._last = self._loop.time()
        if not self.touched:
            self.touched = True
            self._limit = self._idle
            if self._handle is not None:
                self._handle.cancel()
            self._handle = (
                self._loop.call_at(self._last + self._idle, self._check)
                if self._idle is not None
                else None
            )

    def _check(self) -> None:
        assert self._limit is not None
        due = self._last + self._limit
        if self._loop.time() >= due:
            self._fired = True
            if self._task is not None:
                self._task.cancel()
        else:
            self._handle = self._loop.call_at(due, self._check)

    def expired(self) -> bool:
        """Whether a cancellation came from this watchdog (and is taken back)."""
        if not self._fired or self._task is None:
            return False
        self._fired = False
        return self._task.uncancel() == 0

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
