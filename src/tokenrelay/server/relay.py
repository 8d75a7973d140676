"""The path of one request, the same for every protocol and provider:

body -> client codec -> ChatRequest -> router plan -> attempts -> upstream
upstream frames (same protocol) or events -> client encoder -> hub stream -> SSE
                                          or the fold -> one JSON body
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..affinity import Conversation
from ..config import Config
from ..events import ChatRequest, GatewayError, Usage, too_deep
from ..fold import Fold, Tally, charged_usage
from ..ids import token_hex
from ..metrics import Metrics
from ..protocols.base import ClientProtocol, FramePassthrough, StreamEncoder
from ..protocols.registry import REGISTRY
from ..providers.base import Upstream
from ..router import Router
from ..store import Principal
from ..streams.hub import Reader, Stream, StreamHub, parse_event_id
from .accounts import Accounts, Admission
from .attempts import Attempts, retryable
from .body import read_body
from .opening import Opening
from .streaming import RETRY, SSEResponse, declares_resume, race_disconnect
from .watchdog import Watchdog

if TYPE_CHECKING:
    from ..streams.redis_mirror import RemoteStream
    from .stored import Kept

log = logging.getLogger("tokenrelay.access")

SHUTTING_DOWN = GatewayError(
    "overloaded",
    "The gateway is shutting down; resume this stream (Last-Event-ID) or retry elsewhere.",
    status=503,
    code="shutting_down",
)
_json_decode = msgspec.json.decode


@dataclass(slots=True)
class Exchange:
    """What is known of one request as it goes; logged when it ends."""

    request_id: str
    protocol: str
    model: str = ""  # as asked, known once the body is JSON (for the log line of a 400 too)
    stream: bool = False
    decoded: bool = False  # the request was valid: it gets a usage record
    started: float = field(default_factory=time.perf_counter)
    first_byte: float | None = None
    resumes: int = 0
    attempts: Attempts | None = None
    tally: Tally = field(default_factory=Tally)
    metrics: Metrics | None = None
    accounts: Accounts | None = None
    admission: Admission | None = None
    finished: bool = False
    keep: Callable[[Tally], None] | None = None  # keeps the answer (server/stored.py)
    cost: float | None = None  # USD charged, set when the request is settled (priced model)

    def usage(self) -> Usage | None:
        """What this request is charged (``fold.charged_usage``): ``None`` when no
        upstream answered it (refused, failed before its first byte, never reached)."""
        tally = self.tally
        if tally.started or (self.attempts is not None and self.attempts.answered):
            return charged_usage(tally)
        return None

    def ttft_ms(self) -> float | None:
        return (self.first_byte - self.started) * 1000 if self.first_byte else None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def finish(self, outcome: str, status: int = 200) -> None:
        if self.finished:
            return
        self.finished = True
        usage = self.usage()
        if self.accounts is not None:
            self.accounts.settle(self, outcome, usage)
        if self.keep is not None:
            self.keep(self.tally)
        elapsed = time.perf_counter() - self.started
        ttft = (self.first_byte - self.started) if self.first_byte else None
        deployment = self.attempts.deployment if self.attempts else "-"
        if self.metrics is not None:
            m = self.metrics
            model = m.labels.model(self.model)  # bounded: a name not served is "other"
            m.child(
                m.requests, model, m.labels.deployment(deployment), self.protocol, outcome
            ).inc()
            if ttft is not None:
                m.child(m.ttft, model).observe(ttft)
            if usage is not None:
                m.child(m.tokens, model, "in").inc(usage.input)
                m.child(m.tokens, model, "out").inc(usage.output)
            if self.attempts is not None and self.attempts.fallback_used:
                m.child(m.fallbacks, model).inc()
        log.info(
            "%s %s model=%s deployment=%s stream=%s status=%d outcome=%s ttft_ms=%s ms=%.1f "
            "finish=%s tokens_in=%s tokens_out=%s resumes=%d attempts=%s",
            self.request_id,
            self.protocol,
            self.model or "-",
            deployment,
            self.stream,
            status,
            outcome,
            f"{ttft * 1000:.1f}" if ttft is not None else "-",
            elapsed * 1000,
            self.tally.finish_reason or "-",
            usage.input if usage else "-",
            usage.output if usage else "-",
            self.resumes,
            ",".join(self.attempts.log) if self.attempts else "-",
        )


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
            if state is not None and isinstance(data, dict):
                assert self.kept is not None
                data = await self.kept.prepare(state, protocol.name, data, principal.owner)
                exchange.keep = self.kept.keeper(state, data, principal.owner)
            request = protocol.decode_request(data, params)
            if protocol.FORWARDED_HEADERS and request.source is not None:
                request.source.headers = {
                    h: v for h in protocol.FORWARDED_HEADERS if (v := headers.get(h))
                }
            exchange.model, exchange.stream = request.model, request.stream
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
            )
            exchange.attempts = attempts
        except GatewayError as error:
            return self.error_response(protocol, error, exchange)
        except RecursionError:  # decoding, reading or re-encoding a body nested too deeply
            return self.error_response(protocol, too_deep(), exchange)
        relay = Relay(request, attempts, exchange)
        if not request.stream:
            return _FoldResponse(self, protocol, relay)
        # a protocol whose clients parse nothing but data lines: no ids, no pings
        plain = not REGISTRY.get(protocol.name).event_ids
        resumable = declares_resume(headers) and not plain
        array = request.source is not None and request.source.array
        start = _StreamStart(self, protocol, relay, principal.owner, resumable, plain, array)
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
        upstream is always closed, the request's timeouts stopped."""
        watchdog = self.attempts.watchdog
        assert watchdog is not None  # (an attempt was opened)
        watchdog.watch(asyncio.current_task())
        try:
            await self._run(upstream, target, watchdog)
        finally:
            self.attempts.stop()

    async def _run(self, upstream: Upstream, target: Target, watchdog: Watchdog) -> None:
        attempts, exchange = self.attempts, self.exchange
        metrics = exchange.metrics
        gap = (
            metrics.child(metrics.gap, metrics.labels.model(exchange.model))
            if metrics is not None
            else None
        )
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
                attempts.done()
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


class _StreamTarget:
    """Delivers into a hub stream: frames of the client's protocol, numbered there."""

    def __init__(
        self, stream: Stream, protocol: ClientProtocol, request: ChatRequest, tally: Tally
    ) -> None:
        self.stream = stream
        self.protocol = protocol
        self.request = request
        self.tally = tally
        self.encoder: StreamEncoder | FramePassthrough | None = None

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
            return upstream.payloads() if passthrough.payloads else upstream.frames()
        self.encoder = self.protocol.stream_encoder(self.request, model, self.tally)
        return upstream.events()

    def take(self, batch: list[Any]) -> bool:
        assert self.encoder is not None
        frames = self.encoder.encode(batch)
        if frames:
            self.stream.publish(frames)
            return True
        return False

    def finish(self) -> None:
        if self.encoder is not None:
            self.stream.publish(self.encoder.close())

    def fail(self, error: GatewayError) -> None:
        if self.encoder is None:
            self.encoder = self.protocol.stream_encoder(
                self.request, self.request.model, self.tally
            )
        self.stream.publish(self.encoder.fail(error.event()))

    def cancel(self) -> None:
        if self.encoder is not None:
            self.stream.publish(self.encoder.close(cancelled=True))


@dataclass(slots=True)
class _Production:
    """A new stream's production: the upstream read into the stream, then the request
    accounted for, exactly once. Run by the response's task (``SSEResponse``) or, with
    ``start()``, as a task of its own; either way ``stream.producer`` is that task, so a
    stop (cancel, or nobody came back in time) ends the stream properly."""

    relay: Relay
    upstream: Upstream
    target: _StreamTarget
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
            if stream.cancelled or stream.interrupted:  # stopped before it began
                raise asyncio.CancelledError
            await relay.run(self.upstream, target)
        except asyncio.CancelledError:
            relay.attempts.done()
            if stream.interrupted:
                target.fail(SHUTTING_DOWN)
            else:
                target.cancel()
                metrics = relay.exchange.metrics
                if metrics is not None:
                    metrics.stream_events.labels("cancelled").inc()
        finally:
            try:
                relay.attempts.stop()
                await self.upstream.aclose()
            finally:  # the stream ends even if this task is cancelled once more
                stream.finish()
                stream.producer = None  # a finished stream is kept for resumes, not its task

    def settle(self) -> None:
        stream, exchange = self.stream, self.relay.exchange
        outcome = (
            "interrupted"
            if stream.interrupted
            else "cancelled"
            if stream.cancelled
            else ("error" if exchange.tally.error else "ok")
        )
        exchange.resumes = stream.resumes
        exchange.finish(outcome)


@dataclass(slots=True)
class _StreamStart:
    """A streaming request while its upstream is being opened (``Opening``): the
    response it gets once the upstream answered or failed, or its stream begun early
    (the upstream is slow to answer: headers and pings go out meanwhile)."""

    gateway: Gateway
    protocol: ClientProtocol
    relay: Relay
    owner: str | None
    resumable: bool
    plain: bool = False  # frames without ids, and no pings (clients that parse data only)
    array: bool = False  # one JSON array instead of SSE (Gemini without ``alt=sse``)
    stream: Stream | None = None
    response: SSEResponse | None = None

    def _target(self, stream: Stream) -> _StreamTarget:
        exchange = self.relay.exchange
        return _StreamTarget(stream, self.protocol, self.relay.request, exchange.tally)

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
        response.production = _Production(self.relay, upstream, self._target(stream), stream)
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
        attempts.stop()
        attempts.done()
        if stream is None:
            exchange.finish("disconnected", 499)
            return
        target = self._target(stream)
        if stream.interrupted:
            target.fail(SHUTTING_DOWN)
        elif stream.cancelled:
            target.encoder = self.protocol.stream_encoder(
                self.relay.request, self.relay.request.model, target.tally
            )
            target.cancel()
        stream.cancelled = stream.cancelled or not stream.interrupted
        stream.finish()
        stream.producer = None
        exchange.finish("interrupted" if stream.interrupted else "cancelled")


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
            if _cost_asked(self.relay.request) and isinstance(body.get("usage"), dict):
                body["usage"]["cost"] = round(exchange.cost, 9)
        return JSONResponse(body, headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await race_disconnect(self._answer(), receive)
        if response is None:
            self.relay.attempts.stop()
            if self.upstream is not None:
                await self.upstream.aclose()
            self.relay.attempts.done()
            self.target.account()  # what was read before the client left is charged
            self.relay.exchange.finish("disconnected", 499)
            return
        await response(scope, receive, send)


def _cost_asked(request: ChatRequest) -> bool:
    """OpenRouter's convention: ``"usage": {"include": true}`` asks for ``usage.cost``."""
    source = request.source.body if request.source is not None else request.extra
    asked = source.get("usage")
    return isinstance(asked, dict) and asked.get("include") is True
