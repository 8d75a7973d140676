"""Timeouts and retries: the settings, and the clock that enforces the timeouts.

Both settings are frozen dataclasses: a client holds defaults, a call may pass its own
(``dataclasses.replace(client.timeouts, first_token=5)`` changes one field).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import httpx

from .errors import APITimeoutError

T = TypeVar("T")

__all__ = ["RETRYABLE_STATUS", "Clock", "Retry", "Timeouts", "backoff", "retry_after"]

RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds; ``None`` is no limit.

    - ``connect``: to open a connection;
    - ``first_token``: from sending a request to the first event of its stream;
    - ``idle``: longest silence between two events of a stream;
    - ``total``: the whole call, retries and resumes included.

    Keep-alive comments (``: ping``) do not count as events: a server that only pings
    still times out. A non-streaming ``create()`` has only ``connect`` and ``total``.
    """

    connect: float | None = 10.0
    first_token: float | None = 600.0
    idle: float | None = 120.0
    total: float | None = None

    def httpx(self) -> httpx.Timeout:
        """The transport's share: connect (and pool); reads are timed by ``Clock``."""
        return httpx.Timeout(connect=self.connect, read=None, write=60.0, pool=self.connect)


@dataclass(frozen=True, slots=True)
class Retry:
    """Retries before the first byte and resumes after it.

    ``max_attempts`` requests at most (1 = no retry), on connection errors and on 408,
    429 and 5xx, sleeping ``uniform(0, min(backoff_max, backoff_base * 2**n))`` (full
    jitter) or the server's ``Retry-After`` when it gives one; a ``Retry-After`` over
    ``retry_after_max`` is not waited for (the error is raised). ``max_resumes``
    re-attachments at most after a dropped stream.
    """

    max_attempts: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    retry_after_max: float = 60.0
    max_resumes: int = 5


def backoff(policy: Retry, attempt: int) -> float:
    """Full jitter: the sleep before retry number ``attempt`` (0-based)."""
    return random.uniform(0.0, min(policy.backoff_max, policy.backoff_base * 2.0**attempt))


def retry_after(headers: httpx.Headers) -> float | None:
    """The server's hint in seconds: ``retry-after-ms``, or ``Retry-After`` as seconds or
    an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class Clock:
    """Enforces ``first_token``, ``idle`` and ``total`` on every wait of one call.

    ``sent()`` at each (re)send restarts the wait for an event; ``event()`` records
    one. ``run(awaitable)`` awaits with the deadline in force at its start.
    """

    __slots__ = ("_first", "_idle", "_loop", "_mark", "_total", "started", "total_at")

    def __init__(self, timeouts: Timeouts, streaming: bool) -> None:
        self._loop = asyncio.get_running_loop()
        now = self._loop.time()
        self._total = timeouts.total
        self.total_at = now + timeouts.total if timeouts.total is not None else None
        self._first = timeouts.first_token if streaming else None
        self._idle = timeouts.idle if streaming else None
        self._mark = now
        self.started = False  # an event arrived

    def sent(self) -> None:
        """A request was (re)sent: the wait for an event starts over."""
        self._mark = self._loop.time()

    def event(self) -> None:
        """An event arrived."""
        self.started = True
        self._mark = self._loop.time()

    def deadline(self) -> float | None:
        """The loop time by which the next event (or the answer) must come."""
        limit = self._idle if self.started else self._first
        due = self._mark + limit if limit is not None else None
        if self.total_at is None:
            return due
        return self.total_at if due is None else min(due, self.total_at)

    async def run(self, awaitable: Awaitable[T]) -> T:
        """Await within the deadline; ``APITimeoutError`` when it passes."""
        scope = asyncio.timeout_at(self.deadline())
        try:
            async with scope:
                return await awaitable
        except TimeoutError:
            if not scope.expired():
                raise
            raise self.expired() from None

    def expired(self) -> APITimeoutError:
        """The error for the deadline that ran out."""
        if self.total_at is not None and self._loop.time() >= self.total_at:
            return APITimeoutError(f"no answer within {self._total:g}s", code="total_timeout")
        if self.started:
            return APITimeoutError(f"no event for {self._idle:g}s", code="idle_timeout")
        return APITimeoutError(
            f"no first event within {self._first:g}s", code="first_token_timeout"
        )
