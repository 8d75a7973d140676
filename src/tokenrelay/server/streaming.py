"""The SSE response: headers, the client's disconnect raced against the body, one
write per piece of the body.

On a gateway connection (``channel.py``) a hub reader's response is its request's own
task: the stream's producer writes live frames to the channel directly, and the
channel's disconnect callback ends the reader. When the response also carries the
stream's ``Production`` (a new stream, not a resume), that same task produces it: the
headers go out, then the upstream is read, and each frame reaches the client from the
publish that numbers it, with no task switch in between; a second task is started only
if the client's connection pushes back. Otherwise (another server, or a body that is
not a hub reader) the production runs as a task of its own, and a response's life is
two tasks: the pump (reads the body iterator, writes to the client) and the watcher
(waits for ``http.disconnect``). Whichever ends first ends the other. The body iterator
is always closed in ``finally``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any, Protocol, TypeVar

from starlette.types import Receive, Scope, Send

from ..sse import SSEDataDecoder
from ..streams.reader import Reader
from .channel import Channel, channel_of

T = TypeVar("T")

# Asks EventSource to reconnect after 1 s instead of its default 3 s (resume route only).
RETRY = b"retry: 1000\n\n"

# The declaration of a client that resumes (tokenrelay's SDKs send it): its frames carry
# ``id:`` lines and, if it drops, its stream is read on for the grace. Any other client
# gets the provider's wire (no ``id:``, no ``retry:``) and leaving closes the upstream.
RESUME_HEADER = "x-tokenrelay-resume"


def declares_resume(headers: Mapping[str, str]) -> bool:
    """The request declares that its client resumes (``X-Tokenrelay-Resume: 1``)."""
    return headers.get(RESUME_HEADER, "").strip().lower() in ("1", "true", "yes")


SSE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class Production(Protocol):
    """What makes a new stream's frames: run in the response's task, or started as a
    task of its own."""

    async def run(self) -> None:
        """Produce the stream to its end (it is finished when this returns)."""

    def settle(self) -> None:
        """Account for the request, once, after its response is complete."""

    def start(self) -> None:
        """Run and settle as a task of its own."""


class SSEResponse:
    """An ASGI response streaming ``body`` (an async iterator of bytes), raced against
    the client's disconnect: when the client goes away the body iterator is closed at
    once (for a hub reader, that detaches it from its stream)."""

    def __init__(
        self,
        body: AsyncIterator[bytes],
        headers: list[tuple[bytes, bytes]] | None = None,
        prelude: bytes = b"",
        production: Production | None = None,
    ) -> None:
        self.body = body
        self.headers = SSE_HEADERS + (headers or [])
        self.prelude = prelude
        self.production = production
        self.started = False  # the headers (and prelude) already went out (``Opening``)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        channel = channel_of(scope) if scope["method"] != "HEAD" else None
        production = self.production
        if channel is not None and isinstance(self.body, Reader):
            if production is not None and not channel.lost:
                await self._produce_on_channel(channel, self.body, send, production)
                return
            if production is not None:
                production.start()
            await self._on_channel(channel, self.body, send)
            return
        if production is not None:
            production.start()
        pump = asyncio.ensure_future(self._pump(send))
        watcher = asyncio.ensure_future(wait_disconnect(receive))
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

    async def _produce_on_channel(
        self, channel: Channel, reader: Reader, send: Send, production: Production
    ) -> None:
        """A new stream on a gateway connection: this task sends the headers, then
        produces the stream; its reader follows it through the channel."""
        behind: asyncio.Future[None] | None = None

        def fall_behind() -> None:  # the connection pushed back: a task writes the rest
            nonlocal behind
            behind = asyncio.ensure_future(_copy(reader, send))

        channel.watch(reader.close)
        try:
            if not self.started:
                await send(self._start([*self.headers, (b"transfer-encoding", b"chunked")]))
            reader.follow(channel.write, fall_behind)
            await production.run()
            reader.on_behind = None
            await (behind if behind is not None else _copy(reader, send))  # what is left
            await send(_end())
        finally:
            channel.watch(None)
            if behind is not None and not behind.done():
                behind.cancel()
                await asyncio.wait({behind})
            await reader.aclose()
            production.settle()

    def json_array(self) -> None:
        """Send the stream as one JSON array of its frames' data instead of SSE (Gemini's
        ``streamGenerateContent`` without ``alt=sse``): ``[`` at once, each element as
        its frame is produced, ``]`` at the end. Whitespace stands in for keep-alive
        comments. The frames kept for a resume are the SSE ones."""
        self.headers = [(b"content-type", b"application/json; charset=utf-8"), *self.headers[1:]]
        self.body = _as_json_array(self.body)

    def _start(self, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        return {"type": "http.response.start", "status": 200, "headers": headers}

    def head(self, chunked: bool) -> dict[str, Any]:
        """The start message, for one who sends it early (then ``started``): ``chunked``
        on a gateway channel, whose writes are chunks."""
        extra = [(b"transfer-encoding", b"chunked")] if chunked else []
        return self._start([*self.headers, *extra])

    async def _pump(self, send: Send, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        if self.started:
            await _copy(self.body, send)
            await send(_end())
            return
        await send(self._start(headers or self.headers))
        if self.prelude:
            await send({"type": "http.response.body", "body": self.prelude, "more_body": True})
        await _copy(self.body, send)
        await send(_end())


def _end() -> dict[str, Any]:
    return {"type": "http.response.body", "body": b"", "more_body": False}


async def _copy(body: AsyncIterator[bytes], send: Send) -> None:
    async for chunk in body:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _as_json_array(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    decoder = SSEDataDecoder()
    first = True
    try:
        yield b"["
        async for chunk in body:
            items = decoder.feed(chunk)
            if not items:
                yield b"\n"
                continue
            joined = b",\r\n".join(items)
            yield joined if first else b",\r\n" + joined
            first = False
        tail = decoder.flush()
        if tail:
            yield (b"" if first else b",\r\n") + b",\r\n".join(tail)
        yield b"]"
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()


async def wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def race_disconnect(work: Coroutine[Any, Any, T], receive: Receive) -> T | None:
    """Run ``work`` unless the client disconnects first (then cancel it, return None)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_disconnect(receive))
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
