"""A request's timeouts on one timer (server/watchdog.py): first token, idle, total;
a cancellation of its own told from any other."""

from __future__ import annotations

import asyncio
import time

import pytest

from tokenrelay.server.watchdog import FIRST_TOKEN, IDLE, TOTAL, Watchdog


async def _expiry(dog: Watchdog, reads: list[float]) -> tuple[str | None, float]:
    """Sleep through ``reads`` (seconds between touches), then wait: which timeout
    ended it, and when."""
    started = time.monotonic()
    try:
        for pause in reads:
            await asyncio.sleep(pause)
            dog.touch()
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        return dog.expired(), time.monotonic() - started
    return None, time.monotonic() - started


@pytest.mark.parametrize(
    ("total", "first", "idle", "reads", "which", "after"),
    [
        (None, 0.1, 1.0, [], FIRST_TOKEN, 0.1),  # nothing came
        (None, 2.0, 0.3, [0.05] * 8, IDLE, 0.7),  # reads keep it alive, then silence
        (0.6, 5.0, 0.3, [0.05] * 20, TOTAL, 0.6),  # alive, but too long in all
        (0.15, 1.0, 1.0, [], TOTAL, 0.15),
    ],
)
async def test_the_timeout_due_first_fires_when_due(
    total: float | None,
    first: float,
    idle: float,
    reads: list[float],
    which: str,
    after: float,
) -> None:
    dog = Watchdog(total)
    dog.attempt(first, idle)
    got, elapsed = await _expiry(dog, reads)
    dog.stop()
    assert got == which
    # Margins are wide (reads come 6x faster than the idle limit; 1 s late is allowed):
    # a loaded CI machine can stall any step. Which timeout fired is the real check.
    assert after - 0.01 <= elapsed < after + 1.0


async def test_a_new_attempt_restarts_the_first_token_clock_not_the_total() -> None:
    dog = Watchdog(1.0)
    dog.attempt(0.5, 5.0)
    assert (await _expiry(dog, []))[0] == FIRST_TOKEN
    dog.attempt(5.0, 5.0)  # the next attempt: only the total can end it now
    got, elapsed = await _expiry(dog, [])
    assert got == TOTAL and elapsed < 0.95  # ~0.5 s left of the total, not a new 1 s
    dog.stop()


async def test_another_cancellation_is_not_taken_for_a_timeout() -> None:
    async def watched() -> str | None:
        dog = Watchdog(None)
        dog.attempt(10.0, 10.0)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            found = dog.expired()
            dog.stop()
            return found
        return "not cancelled"

    task = asyncio.ensure_future(watched())
    await asyncio.sleep(0.01)
    task.cancel()
    assert await task is None
