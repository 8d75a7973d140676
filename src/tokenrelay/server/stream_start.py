"""A new stream, from its start to its end: ``StreamStart`` is what ``Opening`` calls
back while the upstream is opened (the response begun early, or once the upstream
answered or failed); ``Production`` reads the upstream into the stream and accounts for
the request, once; ``StreamTarget`` turns what is read into the client's frames.

It sees the gateway (``relay.Gateway``) and the relay only through the two small faces
below, so nothing here imports ``relay``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.responses import Response
from starlette.types import ASGIApp

from ..events import ChatRequest, GatewayError
from ..fold import Tally
from ..protocols.base import ClientProtocol, FramePassthrough, StreamEncoder
from ..protocols.registry import REGISTRY
from ..providers.base import Upstream
from ..streams.hub import Stream, StreamHub, StreamState
from .attempts import Attempts
from .cost_stamp import CostStamp
from .exchange import Exchange
from .streaming import SSEResponse

SHUTTING_DOWN = GatewayError(
    "overloaded",
    "The gateway is shutting down; resume this stream (Last-Event-ID) or retry elsewhere.",
    status=503,
    code="shutting_down",
)


class Host(Protocol):
    """What a stream's start needs of the gateway (``relay.Gateway``)."""

    hub: StreamHub

    def attach(
        self,
        stream: Stream,
        after: int,
        retry: bool = False,
        request_id: str | None = None,
        resumable: bool = True,
        keepalive: bool = True,
    ) -> SSEResponse: ...

    def error_response(
        self, protocol: ClientProtocol, error: GatewayError, exchange: Exchange
    ) -> Response: ...


class Reading(Protocol):
    """One request's reading of its upstream (``relay.Relay``)."""

    request: ChatRequest
    attempts: Attempts
    exchange: Exchange

    async def run(self, upstream: Upstream, target: StreamTarget) -> None: ...


class StreamTarget:
    """Delivers into a hub stream: frames of the client's protocol, numbered there."""

    def __init__(
        self,
        stream: Stream,
        protocol: ClientProtocol,
        request: ChatRequest,
        tally: Tally,
        stamp: CostStamp | None = None,
    ) -> None:
        self.stream = stream
        self.protocol = protocol
        self.request = request
        self.tally = tally
        self.encoder: StreamEncoder | FramePassthrough | None = None
        self.stamp = stamp  # the cost into the final usage frame (only when asked)

    @property
    def ended(self) -> bool:
        return self.encoder is not None and self.encoder.ended

    def begin(self, upstream: Upstream) -> AsyncIterator[list[Any]]:
        # A retry may land on an upstream of another protocol: choose afresh each time
        # (nothing was delivered yet, so the client sees one consistent stream).
        model = self.request.model
        if upstream.protocol == self.protocol.name:
            passthrough = self.protocol.passthrough(self.request, model, self.tally)
            self.encoder = passthrough
            if passthrough.named:
                return upstream.named()
            return upstream.payloads() if passthrough.payloads else upstream.frames()
        self.encoder = self.protocol.stream_encoder(self.request, model, self.tally)
        return upstream.events()

    def take(self, batch: list[Any]) -> bool:
        assert self.encoder is not None
        frames = self.encoder.encode(batch)
        if frames:
            self.stream.publish(self.stamp(frames) if self.stamp is not None else frames)
            return True
        return False

    def finish(self) -> None:
        if self.encoder is not None:
            frames = self.encoder.close()
            self.stream.publish(self.stamp(frames) if self.stamp is not None else frames)

    def fail(self, error: GatewayError) -> None:
        if self.encoder is None:
            self.encoder = self.protocol.stream_encoder(
                self.request, self.request.model, self.tally
            )
        self.stream.publish(self.encoder.fail(error.event()))

    def cancel(self) -> None:
        if self.encoder is not None:
            frames = self.encoder.close(cancelled=True)
            self.stream.publish(self.stamp(frames) if self.stamp is not None else frames)


@dataclass(slots=True)
class Production:
    """A new stream's production: the upstream read into the stream, then the request
    accounted for, exactly once. Run by the response's task (``SSEResponse``) or, with
    ``start()``, as a task of its own; either way ``stream.producer`` is that task, so a
    stop (cancel, or nobody came back in time) ends the stream properly."""

    relay: Reading
    upstream: Upstream
    target: StreamTarget
    stream: Stream

    def start(self) -> None:
        self.stream.producer = asyncio.ensure_future(self._task())

    async def _task(self) -> None:
        try:
            await self.run()
            await asyncio.sleep(0)  # let the readers write the last frames first
        finally:
            self.settle()

    async def run(self) -> None:
        relay, target, stream = self.relay, self.target, self.stream
        stream.producer = asyncio.current_task()
        try:
            async with relay.attempts:  # however it ends, the attempts end with it
                try:
                    if stream.state is not StreamState.LIVE:  # stopped before it began
                        raise asyncio.CancelledError
                    await relay.run(self.upstream, target)
                finally:
                    await self.upstream.aclose()
        except asyncio.CancelledError:  # stopped: ``stream.state`` says how
            if stream.state is StreamState.INTERRUPTED:
                target.fail(SHUTTING_DOWN)
            else:
                target.cancel()
                metrics = relay.exchange.metrics
                if metrics is not None:
                    metrics.stream_events.labels("cancelled").inc()
        finally:  # the stream ends even if this task is cancelled once more
            stream.finish()
            stream.producer = None  # a finished stream is kept for resumes, not its task

    def settle(self) -> None:
        stream, exchange = self.stream, self.relay.exchange
        if stream.state is StreamState.LIVE:
            outcome = "error" if exchange.tally.error else "ok"
        else:
            outcome = stream.state.value  # "cancelled" or "interrupted"
        exchange.resumes = stream.resumes
        exchange.finish(outcome)


@dataclass(slots=True)
class StreamStart:
    """A streaming request while its upstream is being opened (``Opening``): the
    response it gets once the upstream answered or failed, or its stream begun early
    (the upstream is slow to answer: headers and pings go out meanwhile)."""

    gateway: Host
    protocol: ClientProtocol
    relay: Reading
    owner: str | None
    resumable: bool
    plain: bool = False  # frames without ids, and no pings (clients that parse data only)
    array: bool = False  # one JSON array instead of SSE (Gemini without ``alt=sse``)
    stream: Stream | None = None
    response: SSEResponse | None = None

    def _target(self, stream: Stream) -> StreamTarget:
        exchange = self.relay.exchange
        place = REGISTRY.get(self.protocol.name).cost if exchange.cost_asked else None
        stamp = CostStamp(place, exchange.cost_now) if place is not None else None
        return StreamTarget(stream, self.protocol, self.relay.request, exchange.tally, stamp)

    def begin(self, producer: asyncio.Task[Any] | None) -> SSEResponse:
        """The response begins now, before the upstream's headers: a stream whose
        producer is the task still opening the upstream (a stop or drain cancels it)."""
        gateway, exchange = self.gateway, self.relay.exchange
        self.stream = stream = gateway.hub.create(self.owner, self.protocol.name, not self.plain)
        stream.producer = producer
        self.response = response = gateway.attach(
            stream,
            0,
            request_id=exchange.request_id,
            resumable=self.resumable,
            keepalive=not self.plain,
        )
        if self.array:
            response.json_array()
        return response

    def opened(self, upstream: Upstream) -> SSEResponse:
        """The upstream answered: the response that produces the stream from it."""
        begun = self.response is not None
        response = self.response or self.begin(None)
        if not begun:  # (a response begun early sent its headers before any attempt ended)
            response.headers += self.relay.attempts.headers()
        stream = self.stream
        assert stream is not None
        response.production = Production(self.relay, upstream, self._target(stream), stream)
        return response

    def failed(self, error: GatewayError) -> ASGIApp:
        """Every attempt failed: an error response, or in-band once the stream began."""
        exchange = self.relay.exchange
        if self.stream is None or self.response is None:
            return self.gateway.error_response(self.protocol, error, exchange)
        self._target(self.stream).fail(error)
        self.stream.finish()
        self.stream.producer = None
        exchange.finish(error.kind, error.status)
        return self.response

    def gone(self) -> None:
        """The client left (or the stream was stopped or interrupted) before the
        upstream answered: no further attempt; the request is accounted for."""
        attempts, exchange, stream = self.relay.attempts, self.relay.exchange, self.stream
        attempts.end()
        if stream is None:
            exchange.finish("disconnected", 499)
            return
        target = self._target(stream)
        if stream.state is StreamState.INTERRUPTED:
            target.fail(SHUTTING_DOWN)
        elif stream.state is StreamState.CANCELLED:
            target.encoder = self.protocol.stream_encoder(
                self.relay.request, self.relay.request.model, target.tally
            )
            target.cancel()
        stream.abandon()  # (its client left: cancelled, unless interrupted)
        stream.finish()
        stream.producer = None
        exchange.finish(stream.state.value)
