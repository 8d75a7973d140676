"""A streaming request while its upstream is being opened, before the upstream's headers.

The attempts (``attempts.py``) run in the request's own task, as before; two things watch
them. The client's disconnect (the channel's callback, or a task on ``receive()`` under
another server) cancels them at once: no further attempt is made for a client that has
gone. And if no upstream has answered within ``keepalive_interval``, the response begins
without it: 200, the stream's headers and a ``: ping``, then a ping every interval until
an attempt answers, exactly as while waiting for the first token. From then on a failure
of every attempt is an in-band error frame, as it is after the upstream's headers. An
upstream that answers (or fails) within the interval gets the response it always had:
the stream's, or the error's status. The fast path pays one timer.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from starlette.types import ASGIApp, Receive, Scope, Send

from ..events import ChatRequest, GatewayError
from ..providers.base import Upstream
from ..streams.hub import Stream, StreamState
from ..streams.reader import PING
from .attempts import Attempts
from .channel import Channel, channel_of
from .streaming import SSEResponse, wait_disconnect


class Start(Protocol):
    """The responses of a streaming request (``stream_start.StreamStart``)."""

    stream: Stream | None
    response: SSEResponse | None
    resumable: bool

    def begin(self, producer: asyncio.Task[Any] | None) -> SSEResponse:
        """The response begins before the upstream answered (its stream is created)."""
        ...

    def opened(self, upstream: Upstream) -> SSEResponse: ...

    def failed(self, error: GatewayError) -> ASGIApp: ...

    def gone(self) -> None: ...


class Opening:
    """The ASGI response of a streaming request: opens its upstream, then serves it."""

    __slots__ = (
        "_graced",
        "_left",
        "_pinger",
        "_task",
        "attempts",
        "keepalive",
        "request",
        "start",
    )

    def __init__(
        self, attempts: Attempts, request: ChatRequest, start: Start, keepalive: float
    ) -> None:
        self.attempts = attempts
        self.request = request
        self.start = start
        self.keepalive = keepalive
        self._task: asyncio.Task[Any] | None = None
        self._pinger: asyncio.Future[None] | None = None
        self._left = False
        self._graced = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        channel = channel_of(scope)
        self._task = task = asyncio.current_task()
        watcher: asyncio.Future[None] | None = None
        if channel is not None:
            if channel.lost:
                self.start.gone()
                return
            channel.watch(self._lost)
        else:
            watcher = asyncio.ensure_future(wait_disconnect(receive))
            watcher.add_done_callback(lambda w: None if w.cancelled() else self._lost())
        timer = None
        if self.keepalive > 0:
            loop = asyncio.get_running_loop()
            timer = loop.call_later(self.keepalive, self._begin, channel, send)
        try:
            upstream: Upstream | GatewayError | None = await self.attempts.open(self.request)
        except GatewayError as error:
            upstream = error
        except asyncio.CancelledError:
            stream = self.start.stream
            stopped = stream is not None and stream.state is not StreamState.LIVE
            if not (self._gone or stopped):
                raise
            assert task is not None
            task.uncancel()
            upstream = None
        finally:
            self._task = None  # the open is over: a disconnect is the response's to see
            if timer is not None:
                timer.cancel()
            if channel is not None:
                channel.watch(None)
            if watcher is not None:
                watcher.cancel()
        await self._stop_pinging()
        if self._gone and upstream is not None and not isinstance(upstream, GatewayError):
            await upstream.aclose()
            upstream = None
        if upstream is None:  # the client left, or the stream was stopped: no more attempts
            self.start.gone()
            if self._gone or self.start.response is None:
                return
            response: ASGIApp = self.start.response  # the stream's proper end, to its reader
        elif isinstance(upstream, GatewayError):
            response = self.start.failed(upstream)
        else:
            response = self.start.opened(upstream)
        await response(scope, receive, send)

    @property
    def _gone(self) -> bool:
        """The client left and nobody may come back for the answer."""
        return self._left and not self._graced

    def _lost(self) -> None:
        """The client went away while the upstream was being opened: the attempts stop
        at once, unless the response had begun for a client that resumes (it knows the
        stream's id): then the stream's grace applies, as to any reader of it."""
        if self._left or self._task is None:
            return
        self._left = True
        stream = self.start.stream
        if stream is not None and self.start.resumable:
            self._graced = True
            stream.orphaned(True)
        else:
            self._task.cancel()

    def _begin(self, channel: Channel | None, send: Send) -> None:
        """No upstream answered within the keep-alive interval: the response begins."""
        response = self.start.begin(self._task)
        self._pinger = asyncio.ensure_future(self._ping(response, channel, send))

    async def _ping(self, response: SSEResponse, channel: Channel | None, send: Send) -> None:
        response.started = True
        await send(response.head(chunked=channel is not None))
        while True:
            await send({"type": "http.response.body", "body": PING, "more_body": True})
            await asyncio.sleep(self.keepalive)

    async def _stop_pinging(self) -> None:
        pinger, self._pinger = self._pinger, None
        if pinger is not None:
            pinger.cancel()
            await asyncio.wait({pinger})
            if not pinger.cancelled():
                pinger.exception()  # a write to a client gone: its disconnect tells
