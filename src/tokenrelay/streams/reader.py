"""One client's reading of a hub stream.

A reader yields the frames after its position, then the live ones, until the stream
ends, and a ``: ping`` comment whenever its keep-alive interval passes quietly.

While it is caught up it waits on the stream. If its connection gave it a ``sink`` (a
synchronous write that says whether the bytes went out at once), the producer writes
each new frame to that sink itself, as it publishes: the reader's task is not woken for
a frame, which halves the task switches per chunk. When the sink refuses (the
connection pushes back, or is gone), the reader's task is woken and carries on the slow
way: frames from the stream, written with back-pressure, until it is caught up again.

A reader can also ``follow`` a stream with no task at all (the request's own task is
busy producing the stream): it is then only a sink, and the first time it falls behind
its ``on_behind`` callback starts the task that carries on the slow way.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Protocol

from ..sse import encode_comment
from .frames import Frames

PING = encode_comment("ping")
# The id line the hub puts in front of every event it keeps (no other line of an
# encoded event begins with "id: ": the encoders write only data, event and comments).
_ID_LINE = re.compile(rb"^id: [^\n]*\n", re.MULTILINE)

# Bytes -> True when they were written at once; False: not written, use the slow way.
Sink = Callable[[bytes], bool]


class Source(Protocol):
    """What a reader reads: a hub stream (``hub.Stream``), as the reader sees it."""

    readers: int
    done: bool
    store: Frames

    @property
    def last_seq(self) -> int: ...

    @property
    def base(self) -> int: ...

    def behind(self, pos: int) -> bytes | None: ...

    def _wait(self, reader: Reader) -> None: ...

    def _unwait(self, reader: Reader) -> None: ...

    def _detach(self, resumable: bool) -> None: ...


class Reader:
    """An async iterator of the bytes a client gets from a stream after ``pos``."""

    __slots__ = (
        "_started",
        "closed",
        "keepalive",
        "on_behind",
        "pos",
        "resumable",
        "since",
        "sink",
        "stream",
        "waiter",
    )

    def __init__(self, stream: Source, pos: int, keepalive: float, resumable: bool = True) -> None:
        self.stream = stream
        self.pos = pos
        self.keepalive = keepalive
        # Declared it resumes: gets the frames' ids, and its leaving starts the grace.
        self.resumable = resumable
        self.sink: Sink | None = None
        self.on_behind: Callable[[], None] | None = None  # while following without a task
        self.waiter: asyncio.Future[bool] | None = None
        self.since = 0.0  # time.monotonic() it last got bytes or began waiting (pings)
        self.closed = False
        self._started = False

    def __aiter__(self) -> Reader:
        return self

    async def __anext__(self) -> bytes:
        stream = self.stream
        if not self._started:
            # Counted as a reader from its first step on: a reader that never starts
            # (its client vanished before the response began) never needs detaching.
            self._started = True
            stream.readers += 1
        while not self.closed:
            last = stream.last_seq
            if self.pos < last:
                if self.pos < stream.base:  # this reader fell behind the bytes kept
                    self.closed = True  # (the next step ends it)
                    frame = stream.behind(self.pos)
                    if frame is None:
                        break
                    return frame
                data = stream.store.after(self.pos)
                self.pos = last
                return data if self.resumable else _ID_LINE.sub(b"", data)
            if stream.done:
                break
            self.waiter = asyncio.get_running_loop().create_future()
            self.since = time.monotonic()
            stream._wait(self)
            try:
                ping = await self.waiter
            finally:
                self.waiter = None
            if ping:
                return PING
        await self.aclose()
        raise StopAsyncIteration

    def follow(self, sink: Sink, on_behind: Callable[[], None]) -> None:
        """Take the live frames through ``sink`` from now on, with no task reading; the
        first time the sink refuses, ``on_behind()`` must start one (it iterates this
        reader from where it stands). For a reader that is caught up and not yet
        iterated; at the stream's end, iterating it writes whatever is left."""
        self._started = True
        self.stream.readers += 1
        self.sink = sink
        self.on_behind = on_behind
        self.since = time.monotonic()
        self.stream._wait(self)

    def push(self, data: bytes, last: int, now: float) -> bool:
        """The producer's direct write of the frames up to ``last``; False when the sink
        refused them (the reader's task then takes over)."""
        if self.sink is None or not self.sink(data):
            return False
        self.pos = last
        self.since = now
        return True

    def ping(self, now: float) -> bool:
        """A keep-alive ping: True when the sink wrote it at once (the reader is still
        caught up); otherwise the reader is woken to write it."""
        if self.sink is not None and self.sink(PING):
            self.since = now
            return True
        self.wake(True)
        return False

    def wake(self, ping: bool) -> None:
        waiter = self.waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(ping)
        elif self.on_behind is not None and not self.closed and not self.stream.done:
            on_behind, self.on_behind = self.on_behind, None
            on_behind()  # a following reader fell behind: a task takes over

    def close(self) -> None:
        """The client is gone: stop at once (a waiting task is woken to end; a reader
        following without a task leaves the stream now)."""
        self.closed = True
        self.sink = None
        self.stream._unwait(self)
        if self.on_behind is not None:
            self.on_behind = None
            self._leave()
        self.wake(False)

    def _leave(self) -> None:
        if self._started:
            self._started = False
            self.closed = True
            self.stream._unwait(self)
            self.stream._detach(self.resumable)

    async def aclose(self) -> None:
        self._leave()
