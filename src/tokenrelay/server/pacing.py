"""Admission pacing: a burst of new requests must not stall the streams in flight.

The event loop runs every callback that is ready before it looks at the sockets again.
When hundreds of requests arrive together, hundreds of request tasks are ready at once,
and the loop spends one long turn (~0.1 ms each) starting them all while the chunks of
the streams already running wait in their sockets. Measured on the 500-stream benchmark:
turns of 20-70 ms during the ramp, the largest inter-chunk gaps of the run.

``Pacer.turn()`` lets at most ``per_turn`` requests start per turn of the loop; the others
wait, first come first served, for the following turns. A lone request never waits.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Pacer:
    def __init__(self, per_turn: int) -> None:
        self.per_turn = per_turn
        self._started = 0  # requests started in this turn of the loop
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._armed = False
        # (asyncio.get_running_loop() is a getpid() system call in Python 3.11)
        self._loop: asyncio.AbstractEventLoop | None = None

    async def turn(self) -> None:
        if self.per_turn <= 0:
            return
        loop = self._loop
        if loop is None or not loop.is_running():  # first use, or another loop (tests)
            loop = self._loop = asyncio.get_running_loop()
        if not self._armed:
            self._armed = True
            loop.call_soon(self._next_turn)
        if self._started < self.per_turn and not self._waiting:
            self._started += 1
            return
        waiter = loop.create_future()
        self._waiting.append(waiter)
        await waiter

    def _next_turn(self) -> None:
        self._started = 0
        waiting = self._waiting
        while waiting and self._started < self.per_turn:
            waiter = waiting.popleft()
            if not waiter.done():  # (a cancelled request has left the line)
                waiter.set_result(None)
                self._started += 1
        if waiting or self._started:
            assert self._loop is not None
            self._loop.call_soon(self._next_turn)
        else:
            self._armed = False
