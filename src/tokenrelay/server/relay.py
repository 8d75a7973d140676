"""The path of one request, the same for every protocol and provider:

body -> client codec -> ChatRequest -> router -> provider.open -> upstream
upstream frames (same protocol) or events -> client encoder -> SSE response
                                          or the fold -> one JSON body
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import Config
from ..events import Event, GatewayError
from ..fold import Fold, Tally
from ..protocols.base import ClientProtocol, FramePassthrough, StreamEncoder
from ..providers.base import Upstream
from ..router import Router
from ..sse import ServerSentEvent
from ..streams.hub import Stream, StreamHub, parse_event_id
from .streaming import RETRY, SSEResponse, race_disconnect

log = logging.getLogger("tokenrelay.access")
_json_decode = msgspec.json.decode


@dataclass(slots=True)
class Exchange:
    """What is known of one request as it goes; logged when it ends."""

    request_id: str
    protocol: str
    model: str = ""
    provider: str = ""
    stream: bool = False
    started: float = field(default_factory=time.perf_counter)
    first_byte: float | None = None
    resumes: int = 0
    tally: Tally = field(default_factory=Tally)

    def finish(self, outcome: str, status: int = 200) -> None:
        elapsed = time.perf_counter() - self.started
        ttft = (self.first_byte - self.started) if self.first_byte else None
        usage = self.tally.usage
        log.info(
            "%s %s model=%s provider=%s stream=%s status=%d outcome=%s ttft_ms=%s ms=%.1f "
            "finish=%s tokens_in=%s tokens_out=%s resumes=%d",
            self.request_id,
            self.protocol,
            self.model,
            self.provider,
            self.stream,
            status,
            outcome,
            f"{ttft * 1000:.1f}" if ttft is not None else "-",
            elapsed * 1000,
            self.tally.finish_reason or "-",
            usage.input if usage else "-",
            usage.output if usage else "-",
            self.resumes,
        )


class Gateway:
    """Holds the configuration, the router, the stream hub; serves requests."""

    def __init__(self, config: Config, router: Router, hub: StreamHub) -> None:
        self.config = config
        self.router = router
        self.hub = hub

    def error_response(
        self, protocol: ClientProtocol, error: GatewayError, exchange: Exchange
    ) -> Response:
        exchange.finish(error.kind, error.status)
        headers = {"x-request-id": exchange.request_id, **error.headers}
        return JSONResponse(protocol.error_body(error), error.status, headers)

    def attach(self, stream: Stream, after: int, retry: bool = False) -> SSEResponse:
        """A reader of ``stream`` from frame ``after`` on (a resume when ``after`` > 0)."""
        if after > 0:
            stream.resumes += 1
        headers = [(b"x-stream-id", stream.id.encode())]
        return SSEResponse(
            stream.read(after, self.config.keepalive_interval),
            headers,
            prelude=RETRY if retry else b"",
        )

    async def chat(
        self, protocol: ClientProtocol, body: bytes, last_event_id: str | None = None
    ) -> ASGIApp:
        exchange = Exchange(f"req_{secrets.token_hex(12)}", protocol.name)
        try:
            resume = parse_event_id(last_event_id)
            if resume is not None:  # the original request re-sent to resume its stream
                stream = self.hub.get(resume[0], None)
                return self.attach(stream, resume[1])
            try:
                data = _json_decode(body)
            except msgspec.DecodeError as exc:
                raise GatewayError(
                    "invalid_request", f"The request body is not valid JSON: {exc}"
                ) from None
            request = protocol.decode_request(data)
            exchange.model, exchange.stream = request.model, request.stream
            route = self.router.resolve(request.model)
            exchange.provider = route.provider.name
            upstream = await route.provider.open(request, route.model)
        except GatewayError as error:
            return self.error_response(protocol, error, exchange)
        if not request.stream:
            return _FoldResponse(self, protocol, upstream, request.model, exchange)
        stream = self.hub.create(None, protocol.name)
        encoder: StreamEncoder | FramePassthrough
        source: AsyncIterator[list[Any]]
        if upstream.protocol == protocol.name:
            encoder = protocol.passthrough(request, request.model, exchange.tally)
            source = upstream.frames()
        else:
            encoder = protocol.stream_encoder(request, request.model, exchange.tally)
            source = upstream.events()
        stream.producer = asyncio.create_task(_produce(stream, upstream, source, encoder, exchange))
        response = self.attach(stream, 0)
        response.headers.append((b"x-request-id", exchange.request_id.encode()))
        return response


async def _produce(
    stream: Stream,
    upstream: Upstream,
    source: AsyncIterator[list[ServerSentEvent]] | AsyncIterator[list[Event]],
    encoder: StreamEncoder | FramePassthrough,
    exchange: Exchange,
) -> None:
    """Upstream batches -> numbered frames in the stream, one publish per upstream read.
    After the first byte an upstream failure is an in-band error frame; a stop (cancel,
    or nobody came back in time) ends the stream properly. The upstream is closed in
    ``finally``, and the request is accounted for exactly once, here."""
    encode = encoder.encode
    publish = stream.publish
    try:
        async for batch in source:
            frames = encode(batch)  # type: ignore[arg-type]
            if frames:
                if exchange.first_byte is None:
                    exchange.first_byte = time.perf_counter()
                publish(frames)
            if encoder.ended:
                break
        else:
            publish(encoder.close())
    except GatewayError as error:
        publish(encoder.fail(error.event()))
    except asyncio.CancelledError:
        publish(encoder.close(cancelled=True))
    finally:
        await upstream.aclose()
        stream.finish()
        tally = exchange.tally
        outcome = "cancelled" if stream.cancelled else ("error" if tally.error else "ok")
        exchange.resumes = stream.resumes
        exchange.finish(outcome)


class _FoldResponse:
    """A non-streaming answer: the fold of the upstream stream, computed while watching
    for the client's disconnect (which closes the upstream at once)."""

    def __init__(
        self,
        gateway: Gateway,
        protocol: ClientProtocol,
        upstream: Upstream,
        model: str,
        exchange: Exchange,
    ) -> None:
        self.gateway = gateway
        self.protocol = protocol
        self.upstream = upstream
        self.model = model
        self.exchange = exchange

    async def _fold(self) -> Response:
        fold = Fold()
        try:
            async for events in self.upstream.events():
                if self.exchange.first_byte is None:
                    self.exchange.first_byte = time.perf_counter()
                fold.extend(events)
        except GatewayError as error:
            return self.gateway.error_response(self.protocol, error, self.exchange)
        finally:
            await self.upstream.aclose()
        tally = self.exchange.tally
        tally.usage = fold.usage
        tally.finish_reason = fold.ordered_choices()[0].finish_reason
        if fold.error is not None:
            return self.gateway.error_response(
                self.protocol, GatewayError.from_event(fold.error), self.exchange
            )
        self.exchange.finish("ok")
        return JSONResponse(
            self.protocol.encode_response(fold, self.model),
            headers={"x-request-id": self.exchange.request_id},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await race_disconnect(self._fold(), receive)
        if response is None:
            await self.upstream.aclose()
            self.exchange.finish("disconnected", 499)
            return
        await response(scope, receive, send)
