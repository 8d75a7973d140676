"""``AsyncChatStream``: one streaming answer, as an async iterator of canonical events.

The life of a stream:

1. open: ``POST`` with retries before the first byte (``Session.send``);
2. read: bytes -> the one SSE decoder -> the wire's stream decoder -> events, folded
   as they go; ``first_token``, ``idle`` and ``total`` are enforced on every wait;
3. a drop (a read error, or a body that ends without the wire's end marker and without
   an error frame) re-attaches with ``GET {base}/streams/{id}`` and ``Last-Event-ID``;
   frames numbered at or below the last one seen are skipped, so the caller sees one
   uninterrupted stream. A server that sent no ``X-Stream-Id`` cannot resume: a drop
   is then an ``APIConnectionError``;
4. stop: ``aclose()`` (the ``async with`` exit, a ``break`` out of ``async for``, a
   task cancellation) asks the gateway to cancel the stream, so generation stops.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
import msgspec

from ..events import Error, Event, TextDelta
from ..fold import Fold
from ..sse import ServerSentEvent, SSEDecoder
from .errors import APIConnectionError, APIError, frame_error
from .options import Clock, Retry, Timeouts, backoff
from .result import ChatResult
from .session import Session
from .wire import Wire

__all__ = ["AsyncChatStream"]

T = TypeVar("T")


def _seq(event_id: str | None, stream_id: str | None) -> int | None:
    """The sequence number of a frame ``id: <stream>:<seq>`` of ``stream_id``."""
    if event_id is None or stream_id is None:
        return None
    head, _, seq = event_id.rpartition(":")
    return int(seq) if head == stream_id and seq.isdigit() else None


class AsyncChatStream:
    """An answer being streamed. Iterate it for events (``async for``), or call
    ``text()`` for the text only, or ``final()`` for the assembled ``ChatResult``.

    Nothing is sent until it is entered (``async with``) or first iterated. Leaving the
    ``async with`` block, ``aclose()``, a ``break`` out of ``async for`` (the generator
    is closed) or cancelling the task that reads it stops the answer on the gateway.
    ``anext(stream)`` reads one event and leaves the stream open.
    """

    def __init__(
        self,
        session: Session,
        wire: Wire,
        body: dict[str, Any],
        headers: dict[str, str],
        timeouts: Timeouts,
        retry: Retry,
    ) -> None:
        self._session = session
        self._wire = wire
        self._body = body
        self._headers = headers
        self._timeouts = timeouts
        self._retry = retry
        self._clock: Clock | None = None
        self._sse = SSEDecoder()
        self._decoder = wire.decoder()
        self._fold = Fold()
        self._pending: deque[Event] = deque()
        self._error: APIError | None = None
        self._response: httpx.Response | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._last_seq = 0
        self._done = False  # the answer is complete, or ended with an error
        self._closed = False
        self.stream_id: str | None = None
        """The gateway's ``X-Stream-Id``; ``None`` from a server that cannot resume."""
        self.request_id: str | None = None
        """The server's ``x-request-id``."""
        self.resumes = 0
        """How many times the stream re-attached after a drop."""

    # --- the public surface --------------------------------------------------------

    async def __aenter__(self) -> AsyncChatStream:
        if self._chunks is None and not self._finished:
            await self._guarded(self._open())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._each(lambda event: event)

    async def __anext__(self) -> Event:
        while not self._pending:
            if self._error is not None:
                error, self._error = self._error, None
                await self._release()
                raise error
            if self._finished:
                await self._release()
                raise StopAsyncIteration
            await self._guarded(self._step())
        return self._pending.popleft()

    def text(self) -> AsyncIterator[str]:
        """The text of the first choice, delta by delta."""
        return self._each(lambda e: e.text if isinstance(e, TextDelta) and not e.choice else None)

    async def final(self) -> ChatResult:
        """Read to the end; the assembled answer (what was folded so far, if the stream
        was stopped)."""
        try:
            while True:
                await self.__anext__()
        except StopAsyncIteration:
            pass
        await self.aclose()
        return self.current()

    def current(self) -> ChatResult:
        """The answer assembled from the events read so far."""
        return ChatResult.from_fold(self._fold, self.request_id, self.stream_id)

    async def aclose(self) -> None:
        """Stop: the gateway cancels the stream (and closes its upstream) unless it had
        already ended; the connection is released. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.stream_id is not None and not self._done:
                # shielded: a second cancellation of the closing task must not stop it
                await asyncio.shield(self._session.cancel(self.stream_id, self._headers))
        finally:
            await self._release()

    # --- the machinery -------------------------------------------------------------

    @property
    def _finished(self) -> bool:
        return self._done or self._closed

    async def _each(self, pick: Callable[[Event], T | None]) -> AsyncIterator[T]:
        try:
            while True:
                try:
                    event = await self.__anext__()
                except StopAsyncIteration:
                    return
                item = pick(event)
                if item is not None:
                    yield item
        finally:
            await self.aclose()

    async def _guarded(self, work: Awaitable[None]) -> None:
        """Run a step; a failure, or the cancellation of the reading task, ends the
        stream (and stops it on the gateway)."""
        try:
            await work
        except (APIError, asyncio.CancelledError):
            await self.aclose()
            raise

    def _clock_now(self) -> Clock:
        if self._clock is None:
            self._clock = Clock(self._timeouts, streaming=True)
        return self._clock

    async def _open(self) -> None:
        request = self._session.request(
            "POST", self._wire.path, self._headers, self._timeouts, self._body
        )
        response = await self._session.send(request, self._clock_now(), self._retry)
        self.stream_id = response.headers.get("x-stream-id")
        await self._attach(response)

    async def _attach(self, response: httpx.Response) -> None:
        self._response = response
        self.request_id = self.request_id or response.headers.get("x-request-id")
        if response.headers.get("content-type", "").startswith("application/json"):
            # a server that does not stream answered with the whole message
            content = await self._clock_now().run(response.aread())
            await self._release()
            try:
                body = msgspec.json.decode(content)
            except msgspec.DecodeError:
                raise APIConnectionError("the server sent a body that is not JSON") from None
            self._fold.extend(events := self._wire.events(body))
            self._pending.extend(events)
            self._done = True
            return
        self._chunks = response.aiter_bytes()

    async def _step(self) -> None:
        """Read once: decode what came, or handle the end of the body or a drop."""
        if self._chunks is None:
            await self._open()
            return
        clock = self._clock_now()
        try:
            chunk = await clock.run(anext(self._chunks, None))
        except httpx.TransportError as exc:
            await self._reattach(f"the connection broke: {exc!r}")
            return
        if chunk is None:
            await self._body_ended()
            return
        for frame in self._sse.feed(chunk):
            self._frame(frame, clock)

    def _frame(self, frame: ServerSentEvent, clock: Clock) -> None:
        seq = _seq(frame.id, self.stream_id)
        if seq is not None:
            if seq <= self._last_seq:
                return  # seen before a drop
            self._last_seq = seq
        if self._done:
            return
        clock.event()
        for event in self._decoder.feed(frame):
            if isinstance(event, Error):
                self._done = True
                self._error = frame_error(frame.data, event.message, event.code, self.request_id)
                return
            self._fold.add(event)
            self._pending.append(event)
        if self._decoder.done:
            self._done = True

    async def _body_ended(self) -> None:
        self._sse.flush()
        if self._done:
            await self._release()
            return
        if self.stream_id is not None:
            await self._reattach("the stream ended before its end marker")
            return
        await self._release()
        if self._decoder.close():  # no end marker and no finish: cut short
            raise APIConnectionError("the server closed the stream before it finished")
        self._done = True

    async def _reattach(self, why: str) -> None:
        """Re-attach after a drop: ``GET /streams/{id}`` from the last frame seen."""
        await self._release()
        self._sse.flush()  # forget the half-received event; it comes again
        if self.stream_id is None:
            raise APIConnectionError(f"{why}; the server cannot resume streams (no X-Stream-Id)")
        clock = self._clock_now()
        headers = {**self._headers, "Last-Event-ID": f"{self.stream_id}:{self._last_seq}"}
        request = self._session.request(
            "GET", f"/streams/{self.stream_id}", headers, self._timeouts
        )
        retry = self._retry
        if self.resumes >= retry.max_resumes:
            raise APIConnectionError(f"{why}; no re-attachment left ({retry.max_resumes} used)")
        while True:
            self.resumes += 1
            clock.sent()
            result = await self._session.attempt(request, clock)
            if isinstance(result, httpx.Response):
                await self._attach(result)
                return
            if self.resumes >= retry.max_resumes:
                raise APIConnectionError(
                    f"{why}; gave up after {self.resumes} re-attachments: {result}"
                ) from result
            hint = result.retry_after
            if hint is None or hint > retry.retry_after_max:
                hint = backoff(retry, self.resumes - 1)
            await clock.run(asyncio.sleep(hint))

    async def _release(self) -> None:
        chunks, response = self._chunks, self._response
        self._chunks = self._response = None
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
        if response is not None:
            await response.aclose()
