"""The SSE response: headers, the client's disconnect raced against the body, one
write per piece of the body.

On a gateway connection (``channel.py``) a hub reader's response is its request's own
task: the stream's producer writes live frames to the channel directly, and the
channel's disconnect callback ends the reader. Otherwise (another server, or a body
that is not a hub reader) a response's life is two tasks: the pump (reads the body
iterator, writes to the client) and the watcher (waits for ``http.disconnect``).
Whichever ends first ends the other. The body iterator is always closed in ``finally``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from starlette.types import Receive, Scope, Send

from ..streams.reader import Reader
from .channel import Channel, channel_of

T = TypeVar("T")

# Asks EventSource to reconnect after 1 s instead of its default 3 s (resume route only).
RETRY = b"retry: 1000\n\n"

SSE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class SSEResponse:
    """An ASGI response streaming ``body`` (an async iterator of bytes), raced against
    the client's disconnect: when the client goes away the body iterator is closed at
    once (for a hub reader, that detaches it from its stream)."""

    def __init__(
        self,
        body: AsyncIterator[bytes],
        headers: list[tuple[bytes, bytes]] | None = None,
        prelude: bytes = b"",
    ) -> None:
        self.body = body
        self.headers = SSE_HEADERS + (headers or [])
        self.prelude = prelude

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        channel = channel_of(scope)
        if channel is not None and isinstance(self.body, Reader) and scope["method"] != "HEAD":
            await self._on_channel(channel, self.body, send)
            return
        pump = asyncio.ensure_future(self._pump(send))
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait({pump, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, watcher):
                task.cancel()
            await asyncio.wait({pump, watcher})
            aclose = getattr(self.body, "aclose", None)
            if aclose is not None:
                await aclose()
        if not pump.cancelled() and pump.exception() is not None:
            raise pump.exception()  # type: ignore[misc]

    async def _on_channel(self, channel: Channel, reader: Reader, send: Send) -> None:
        """A hub reader on a gateway connection: one task, no watcher. The producer
        writes the live frames to the channel itself; this task writes the backlog, the
        pings, and whatever the channel refused, and ends when the client goes away."""
        channel.watch(reader.close)
        try:
            if not channel.lost:
                reader.sink = channel.write  # used only while the reader waits, caught up
                await self._pump(send, [*self.headers, (b"transfer-encoding", b"chunked")])
        finally:
            channel.watch(None)
            await reader.aclose()

    async def _pump(self, send: Send, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": headers or self.headers}
        await send(start)
        if self.prelude:
            await send({"type": "http.response.body", "body": self.prelude, "more_body": True})
        async for chunk in self.body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def race_disconnect(work: Coroutine[Any, Any, T], receive: Receive) -> T | None:
    """Run ``work`` unless the client disconnects first (then cancel it, return None)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, watcher):
            if not t.done():
                t.cancel()
        await asyncio.wait({task, watcher})
    if task.cancelled():
        return None
    return task.result()
