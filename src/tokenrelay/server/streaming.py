"""The SSE response: headers, keep-alive pings, the client's disconnect raced against
the body, and one write per upstream read.

The stream's life is two tasks: the pump (reads the body iterator, writes to the
client) and the watcher (waits for ``http.disconnect``). Whichever ends first ends the
other; the body iterator is always closed in ``finally``, which closes the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from starlette.types import Receive, Scope, Send

from ..sse import encode_comment

T = TypeVar("T")

PING = encode_comment("ping")

SSE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class SSEResponse:
    """An ASGI response streaming ``body`` (an async iterator of bytes).

    Until the first piece of the body exists, a ``: ping`` comment is written every
    ``keepalive`` seconds so proxies and browsers keep the connection open.
    ``on_close(disconnected)`` runs once at the end, whatever the ending.
    """

    def __init__(
        self,
        body: AsyncIterator[bytes],
        keepalive: float,
        headers: list[tuple[bytes, bytes]] | None = None,
        on_close: Callable[[bool], None] | None = None,
    ) -> None:
        self.body = body
        self.keepalive = keepalive
        self.headers = SSE_HEADERS + (headers or [])
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        pump = asyncio.ensure_future(self._pump(send))
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        disconnected = False
        try:
            done, _ = await asyncio.wait({pump, watcher}, return_when=asyncio.FIRST_COMPLETED)
            disconnected = watcher in done and not pump.done()
        finally:
            for task in (pump, watcher):
                task.cancel()
            for task in (pump, watcher):
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await task
            aclose = getattr(self.body, "aclose", None)
            if aclose is not None:
                await aclose()
            if self.on_close is not None:
                self.on_close(disconnected)
        if pump.done() and not pump.cancelled() and pump.exception() is not None:
            raise pump.exception()  # type: ignore[misc]

    async def _pump(self, send: Send) -> None:
        body = self.body
        first = asyncio.ensure_future(anext(body, b""))
        try:
            while True:
                done, _ = await asyncio.wait({first}, timeout=self.keepalive)
                if done:
                    break
                await send({"type": "http.response.body", "body": PING, "more_body": True})
        finally:
            if not first.done():
                first.cancel()
                await asyncio.wait({first})  # let the body's own finally run first
        chunk = first.result()
        if chunk:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            async for chunk in body:
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
