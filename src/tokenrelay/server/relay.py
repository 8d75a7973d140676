"""The path of one request, the same for every protocol and provider:

body -> client codec -> ChatRequest -> router plan -> attempts -> upstream
upstream frames (same protocol) or events -> client encoder -> hub stream -> SSE
                                          or the fold -> one JSON body

Here: ``Gateway.chat`` (the request up to its plan), ``Relay`` (the reading of the
upstream, with its attempts) and the non-streaming answer. A new stream's start,
production and frames are in ``stream_start.py``; the request's record and its end
(metrics, log line, settlement) in ``exchange.py``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..affinity import Conversation
from ..config import Config
from ..events import ChatRequest, GatewayError, too_deep
from ..fold import Fold, Tally
from ..ids import token_hex
from ..metrics import Gaps, Metrics
from ..protocols.base import ClientProtocol
from ..protocols.registry import REGISTRY
from ..providers.base import Upstream
from ..router import Router
from ..store import Principal
from ..streams.hub import Reader, Stream, StreamHub, parse_event_id
from .accounts import Accounts
from .attempts import Attempts, retryable
from .body import read_body
from .exchange import Exchange
from .opening import Opening
from .stream_start import SHUTTING_DOWN, StreamStart
from .streaming import RETRY, SSEResponse, declares_resume, race_disconnect
from .watchdog import Watchdog

if TYPE_CHECKING:
    from ..streams.redis_mirror import RemoteStream
    from .background import Background
    from .stored import Kept

_json_decode = msgspec.json.decode


class Gateway:
    """Holds the configuration, the router, the stream hub; serves requests."""

    def __init__(
        self, config: Config, router: Router, hub: StreamHub, metrics: Metrics, accounts: Accounts
    ) -> None:
        self.config = config
        self.router = router
        self.hub = hub
        self.metrics = metrics
        self.accounts = accounts
        self.draining = False
        self.kept: Kept | None = None  # stored answers of stateful protocols (stored.py)
        self.worker: str | None = None  # of serve --workers N: this process's number
        self.background: Background | None = None  # their background mode (background.py)

    def error_response(
        self, protocol: ClientProtocol, error: GatewayError, exchange: Exchange
    ) -> Response:
        exchange.finish(error.kind, error.status)
        headers = {"x-request-id": exchange.request_id, **error.headers}
        return JSONResponse(protocol.error_body(error), error.status, headers)

    def attach(
        self,
        stream: Stream | RemoteStream,
        after: int,
        retry: bool = False,
        request_id: str | None = None,
        resumable: bool = True,
        keepalive: bool = True,
    ) -> SSEResponse:
        """A reader of ``stream`` from frame ``after`` on (a resume when ``after`` > 0).
        ``resumable``: the client declared it resumes (ids on its frames, and the grace
        when it leaves); every resume is."""
        if after > 0:
            stream.resumes += 1
            self.metrics.stream_events.labels("resumed").inc()
        request_id = request_id or f"req_{token_hex(12)}"
        headers = [(b"x-stream-id", stream.id.encode()), (b"x-request-id", request_id.encode())]
        if self.worker is not None:
            headers.append((b"x-tokenrelay-worker", self.worker.encode()))
        keepalive_interval = self.config.keepalive_interval if keepalive else math.inf
        reader = stream.read(after, keepalive_interval)
        if not resumable and isinstance(reader, Reader):
            reader.resumable = False  # (a resume always is: only a new stream's reader)
        return SSEResponse(reader, headers, prelude=RETRY if retry else b"")

    async def chat(
        self,
        protocol: ClientProtocol,
        receive: Receive,
        headers: Headers,
        params: Mapping[str, str] | None = None,
        principal: Principal | None = None,
    ) -> ASGIApp:
        """A chat request: its key is checked from the headers before a byte of the
        body is read (an unauthenticated client cannot make the gateway hold its body).
        ``params``: what the route's path and query say (a Gemini model name);
        ``principal`` when the caller was authenticated otherwise than by its headers (a
        single-stream token: ``server/eventsource.py``)."""
        exchange = Exchange(
            f"req_{token_hex(12)}",
            protocol.name,
            metrics=self.metrics,
            accounts=self.accounts,
        )
        try:
            if self.draining:
                raise SHUTTING_DOWN
            if principal is None:
                principal = await self.accounts.principal(headers)
            body = await read_body(receive, headers, self.config.max_body_bytes)
            resume = parse_event_id(headers.get("last-event-id"))
            if resume is not None:  # the original request re-sent to resume its stream
                found = await self.hub.find(resume[0], principal.owner)  # resumable
                return self.attach(found, resume[1])
            try:
                data = _json_decode(body)
            except msgspec.DecodeError as exc:
                raise GatewayError(
                    "invalid_request", f"The request body is not valid JSON: {exc}"
                ) from None
            if isinstance(data, dict):  # for the log line, should the body be refused
                model, stream = data.get("model"), data.get("stream")
                exchange.model = model if isinstance(model, str) else ""
                exchange.stream = stream is True
            state = self.kept.state(protocol.name) if self.kept is not None else None
            background = False
            if state is not None and isinstance(data, dict):
                assert self.kept is not None
                background = state.background(data) and self.background is not None
                data = await self.kept.prepare(state, protocol.name, data, principal.owner)
                exchange.keep = self.kept.keeper(state, data, principal.owner)
            request = protocol.decode_request(data, params)
            if protocol.FORWARDED_HEADERS and request.source is not None:
                request.source.headers = {
                    h: v for h in protocol.FORWARDED_HEADERS if (v := headers.get(h))
                }
            exchange.model, exchange.stream = request.model, request.stream
            if cost_asked(request, headers):
                exchange.cost_asked = True
                request.include_usage = True  # the cost travels in the usage chunk
            exchange.tally.request = request
            exchange.decoded = True
            exchange.admission = await self.accounts.admit(principal, request)
            attempts = Attempts(
                self.router.plan(
                    request.model,
                    images=request.has_images(),
                    conversation=Conversation(request, headers.get("x-claude-code-session-id")),
                ),
                self.config.retries,
                exchange.request_id,
                self.metrics.retried,
                limiter=self.accounts.limiter,
            )
            exchange.attempts = attempts
        except GatewayError as error:
            return self.error_response(protocol, error, exchange)
        except RecursionError:  # decoding, reading or re-encoding a body nested too deeply
            return self.error_response(protocol, too_deep(), exchange)
        relay = Relay(request, attempts, exchange)
        if background:  # runs whoever reads it (background.py)
            assert self.background is not None and state is not None and isinstance(data, dict)
            return await self.background.launch(
                protocol, state, relay, principal.owner, data, headers
            )
        if not request.stream:
            return _FoldResponse(self, protocol, relay)
        # a protocol whose clients parse nothing but data lines: no ids, no pings
        plain = not REGISTRY.get(protocol.name).event_ids
        resumable = declares_resume(headers) and not plain
        array = request.source is not None and request.source.array
        start = StreamStart(self, protocol, relay, principal.owner, resumable, plain, array)
        keepalive = math.inf if plain else self.config.keepalive_interval
        return Opening(attempts, request, start, keepalive)


class Target(Protocol):
    """Where a relay delivers what it reads: a stream's frames, or a fold."""

    @property
    def ended(self) -> bool: ...

    def begin(self, upstream: Upstream) -> AsyncIterator[list[Any]]: ...

    def take(self, batch: list[Any]) -> bool:
        """Deliver one upstream read; True once something reached the client."""
        ...

    def finish(self) -> None: ...

    def fail(self, error: GatewayError) -> None: ...

    def cancel(self) -> None: ...


@dataclass(slots=True)
class Relay:
    """One request's reading of its upstream, with its attempts."""

    request: ChatRequest
    attempts: Attempts
    exchange: Exchange

    async def run(self, upstream: Upstream, target: Target) -> None:
        """Read ``upstream`` into ``target``. Before the first byte reaches the client,
        a failure (error, first-token or idle timeout) opens the next attempt; after
        it, or when the total timeout passes, the failure is delivered in-band. The
        upstream is always closed, and the attempts ended (``Attempts.end``)."""
        watchdog = self.attempts.watchdog
        assert watchdog is not None  # (an attempt was opened)
        watchdog.watch(asyncio.current_task())
        async with self.attempts:
            await self._run(upstream, target, watchdog)

    async def _run(self, upstream: Upstream, target: Target, watchdog: Watchdog) -> None:
        metrics = self.exchange.metrics
        gap = metrics.gaps(self.exchange.model) if metrics is not None else None
        try:
            await self._read(upstream, target, watchdog, gap)
        finally:
            if gap is not None:
                gap.flush()

    async def _read(
        self, upstream: Upstream, target: Target, watchdog: Watchdog, gap: Gaps | None
    ) -> None:
        attempts, exchange = self.attempts, self.exchange
        clock = time.perf_counter
        delivered = False
        while True:
            try:
                last = 0.0  # no read yet: the wait for the first is not a gap
                async for batch in target.begin(upstream):
                    watchdog.touch()
                    if gap is not None:
                        now = clock()
                        if last:
                            gap.observe(now - last)
                        last = now
                    if target.take(batch) and not delivered:
                        delivered = True
                        exchange.first_byte = time.perf_counter()
                        attempts.succeeded()
                    if target.ended:
                        break
                else:
                    target.finish()
                attempts.succeeded()
                return
            except asyncio.CancelledError:
                which = watchdog.expired()
                if which is None:
                    raise
                error = attempts.timeout_error(which)
            except GatewayError as exc:
                error = exc
            finally:
                await upstream.aclose()
            attempts.failed(error)
            if delivered or not retryable(error) or error.code == "total_timeout":
                target.fail(error)
                return
            try:
                upstream = await attempts.open(self.request, error)
            except GatewayError as final:
                target.fail(final)
                return


class _FoldTarget:
    """Delivers into a fold: nothing reaches the client until the answer is whole, so
    any failure can still be retried."""

    ended = False

    def __init__(self, tally: Tally) -> None:
        self.fold = Fold()
        self.error: GatewayError | None = None
        self.tally = tally

    def account(self) -> None:
        """What was read (however the request ended) into the request's tally."""
        fold, tally = self.fold, self.tally
        tally.usage = fold.usage
        tally.output_chars = fold.chars()
        tally.finish_reason = fold.ordered_choices()[0].finish_reason

    def begin(self, upstream: Upstream) -> AsyncIterator[list[Any]]:
        self.fold = Fold()
        return upstream.events()

    def take(self, batch: list[Any]) -> bool:
        self.fold.extend(batch)
        return False

    def finish(self) -> None:
        if self.fold.error is not None:
            self.error = GatewayError.from_event(self.fold.error)

    def fail(self, error: GatewayError) -> None:
        self.error = error

    def cancel(self) -> None:
        return None


class _FoldResponse:
    """A non-streaming answer: the fold of the upstream stream, computed while watching
    for the client's disconnect (which closes the upstream at once)."""

    def __init__(self, gateway: Gateway, protocol: ClientProtocol, relay: Relay) -> None:
        self.gateway = gateway
        self.protocol = protocol
        self.relay = relay
        self.upstream: Upstream | None = None
        self.target = _FoldTarget(relay.exchange.tally)

    async def _answer(self) -> Response:
        target = self.target
        exchange = self.relay.exchange
        async with self.relay.attempts:  # (ended too if the client leaves meanwhile)
            try:  # opened here, so that a client gone meanwhile stops every attempt
                self.upstream = await self.relay.attempts.open(self.relay.request)
            except GatewayError as error:
                return self.gateway.error_response(self.protocol, error, exchange)
            await self.relay.run(self.upstream, target)
        fold = target.fold
        target.account()
        if target.error is not None:
            return self.gateway.error_response(self.protocol, target.error, exchange)
        fold.usage = exchange.usage() or fold.usage  # the body says what the row says
        fold.request = self.relay.request
        body = self.protocol.encode_response(fold, self.relay.request.model)
        exchange.tally.final = body
        exchange.finish("ok")
        headers = {"x-request-id": exchange.request_id}
        headers.update((k.decode(), v.decode()) for k, v in self.relay.attempts.headers())
        if exchange.cost is not None:  # the bill of this answer (README: prompt caching)
            headers["x-tokenrelay-cost"] = format(exchange.cost, ".9f")
            place = REGISTRY.get(self.protocol.name).cost
            usage = body.get(place.body) if place is not None else None
            if exchange.cost_asked and isinstance(usage, dict):
                usage["cost"] = round(exchange.cost, 9)
        return JSONResponse(body, headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await race_disconnect(self._answer(), receive)
        if response is None:  # (the attempts ended with ``_answer``)
            if self.upstream is not None:
                await self.upstream.aclose()
            self.target.account()  # what was read before the client left is charged
            self.relay.exchange.finish("disconnected", 499)
            return
        await response(scope, receive, send)


def cost_asked(request: ChatRequest, headers: Headers) -> bool:
    """Whether the answer should carry its cost (``usage.cost``, Gemini's
    ``usageMetadata.cost``): ``X-Tokenrelay-Cost: include`` on any protocol, or
    OpenRouter's ``"usage": {"include": true}`` in the body."""
    if headers.get("x-tokenrelay-cost", "").strip().lower() == "include":
        return True
    source = request.source.body if request.source is not None else request.extra
    asked = source.get("usage")
    return isinstance(asked, dict) and asked.get("include") is True
