"""The path of one request, the same for every protocol and provider:

body -> client codec -> ChatRequest -> router -> provider.open -> upstream
upstream frames (same protocol) or events -> client encoder -> SSE response
                                          or the fold -> one JSON body
"""

from __future__ import annotations

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
from .streaming import SSEResponse, race_disconnect

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
    tally: Tally = field(default_factory=Tally)

    def finish(self, outcome: str, status: int = 200) -> None:
        elapsed = time.perf_counter() - self.started
        ttft = (self.first_byte - self.started) if self.first_byte else None
        usage = self.tally.usage
        log.info(
            "%s %s model=%s provider=%s stream=%s status=%d outcome=%s ttft_ms=%s ms=%.1f "
            "finish=%s tokens_in=%s tokens_out=%s",
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
        )


class Gateway:
    """Holds the configuration, the router and the client protocols; serves requests."""

    def __init__(self, config: Config, router: Router) -> None:
        self.config = config
        self.router = router

    def error_response(
        self, protocol: ClientProtocol, error: GatewayError, exchange: Exchange
    ) -> Response:
        exchange.finish(error.kind, error.status)
        headers = {"x-request-id": exchange.request_id, **error.headers}
        return JSONResponse(protocol.error_body(error), error.status, headers)

    async def chat(self, protocol: ClientProtocol, body: bytes) -> ASGIApp:
        exchange = Exchange(f"req_{secrets.token_hex(12)}", protocol.name)
        try:
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
        headers = [(b"x-request-id", exchange.request_id.encode())]
        if not request.stream:
            return _FoldResponse(self, protocol, upstream, request.model, exchange)
        encoder: StreamEncoder | FramePassthrough
        source: AsyncIterator[list[Any]]
        if upstream.protocol == protocol.name:
            encoder = protocol.passthrough(request, request.model, exchange.tally)
            source = upstream.frames()
        else:
            encoder = protocol.stream_encoder(request, request.model, exchange.tally)
            source = upstream.events()

        def on_close(disconnected: bool) -> None:
            tally = exchange.tally
            outcome = "disconnected" if disconnected else ("error" if tally.error else "ok")
            exchange.finish(outcome)

        return SSEResponse(
            _relay(upstream, source, encoder, exchange),
            self.config.keepalive_interval,
            headers,
            on_close,
        )


async def _relay(
    upstream: Upstream,
    source: AsyncIterator[list[ServerSentEvent]] | AsyncIterator[list[Event]],
    encoder: StreamEncoder | FramePassthrough,
    exchange: Exchange,
) -> AsyncIterator[bytes]:
    """Upstream batches -> client bytes, one write per upstream read. After the first
    byte an upstream failure is an in-band error frame. The upstream is closed in
    ``finally``: on completion, on error, and when the client goes away."""
    encode = encoder.encode
    try:
        async for batch in source:
            data = encode(batch)  # type: ignore[arg-type]
            if data:
                if exchange.first_byte is None:
                    exchange.first_byte = time.perf_counter()
                yield data
            if encoder.ended:
                return
        tail = encoder.close()
        if tail:
            yield tail
    except GatewayError as error:
        yield encoder.fail(error.event())
    finally:
        await upstream.aclose()


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
