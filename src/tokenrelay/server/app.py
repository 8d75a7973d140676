"""The ASGI application, assembled from the configuration."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from ..config import Config, TimeoutsConfig
from ..events import Error
from ..limits import Limits
from ..metrics import Metrics
from ..notify import Notifier
from ..protocols.base import EmbeddingWire, UpstreamProtocol
from ..protocols.registry import REGISTRY
from ..providers.base import Provider
from ..providers.http import Endpoint, HTTPProvider
from ..providers.keys import key_id
from ..providers.local import LocalProvider
from ..router import ModelSpec, Router, Timeouts
from ..store.channels import ChannelStore
from ..store.secrets import SecretBox
from ..streams.hub import HubSettings, StreamHub
from .accounts import Accounts
from .admin import AdminAPI
from .admin_channels import ChannelsAPI
from .admin_stats import stats_routes
from .api import API, http_error, server_error
from .background import Background
from .channels import ChannelRegistry, LiveProvider
from .count_tokens import TokenCounter, count_routes
from .door import Door, adding
from .embeddings import Embeddings, embedding_routes
from .eventsource import ChatStreams, chat_stream_routes
from .pacing import Pacer
from .probes import Prober
from .relay import Gateway
from .status import StatusRoutes
from .stored import Kept
from .web import admin_page_routes, status_page_route, web_routes
from .worker import Worker

access = logging.getLogger("tokenrelay.access")


def _timeouts(t: TimeoutsConfig) -> Timeouts:
    return Timeouts(t.connect, t.first_token, t.idle, t.total)


def _endpoints(
    protocol: str, endpoints: list[str] | None
) -> tuple[EmbeddingWire | None, dict[str, UpstreamProtocol | None]]:
    """What a provider of ``protocol`` serves besides chat, from its ``endpoints``
    (unset: everything its protocol has): its embeddings wire, and for each client
    protocol that is an endpoint of its own (``/completions``) the codec that speaks to
    it, or ``None`` where it is not served (chat too, when ``chat`` is not listed)."""
    listed = set(endpoints) if endpoints is not None else None
    spec = REGISTRY.get(protocol)
    embeddings = spec.embeddings if listed is None or "embeddings" in listed else None
    variants: dict[str, UpstreamProtocol | None] = {}
    for other in REGISTRY:
        if other.endpoint_of is not None:
            base, name = other.endpoint_of
            served = base == protocol and (listed is None or name in listed)
            variants[other.name] = other.upstream if served else None
        elif listed is not None and "chat" not in listed and other.client is not None:
            variants[other.name] = None
    return embeddings, variants


def build_router(
    config: Config,
    live: Sequence[LiveProvider] = (),
    made: dict[str, tuple[Any, Provider]] | None = None,
) -> Router:
    """Providers (the config file's, then ``live``: the database's channels with their
    keys), their timeouts, and the configured model names, as a router. ``made``:
    providers built before, by name with their signature, reused when unchanged (and
    updated to what this router uses)."""
    providers: list[Provider] = []
    timeouts: dict[str, Timeouts] = {}
    if config.local.enabled:
        providers.append(LocalProvider(config.local.rate))
    every = [(p, [(key_id(p.name, k), k) for k in p.api_keys], "config") for p in config.providers]
    every += list(live)
    cache = made if made is not None else {}
    used: dict[str, tuple[Any, Provider]] = {}
    for p, keys, signature in every:
        timeouts[p.name] = Timeouts().merged(_timeouts(p.timeouts))
        found = cache.get(p.name)
        if found is not None and found[0] == signature:
            provider = found[1]
        else:
            endpoint = Endpoint(
                p.base_url,
                p.api_key,
                dict(p.headers),
                timeouts[p.name].connect,
                p.anthropic_betas,
                keys,
            )
            codec = REGISTRY.upstream(p.protocol)
            embeddings, variants = _endpoints(p.protocol, p.endpoints)
            provider = HTTPProvider(p.name, codec, endpoint, list(p.models), embeddings, variants)
        used[p.name] = (signature, provider)
        providers.append(provider)
    cache.clear()
    cache.update(used)
    models = {
        m.name: ModelSpec(
            [(d, None) if isinstance(d, str) else (d.model, d.weight) for d in m.deployments]
            or [(m.name, None)],
            list(m.fallbacks),
            _timeouts(m.timeouts),
            m.images,
            m.affinity,
        )
        for m in config.models
    }
    r = config.retries
    text_only = {p.name for p, _, _ in every if not p.images}
    weights = {p.name: p.weight for p, _, _ in every}
    limits = {
        p.name: Limits(rpm=p.limits.rpm, max_concurrent=p.limits.max_concurrent)
        for p, _, _ in every
        if p.limits.rpm or p.limits.max_concurrent
    }
    rule = (r.breaker_failures, r.breaker_cooldown, r.breaker_window)
    return Router(providers, timeouts, models, rule, text_only, weights, limits)


def served_names(config: Config, router: Router) -> tuple[list[str], list[str]]:
    """The model and deployment names served by name (the metrics' labels): configured,
    listed, and the providers' listed bare names; not what a "*" provider passes on."""
    listed = [m for m, _ in router.listed()]
    bare = [m for p in router.providers.values() for m in p.models() if m != "*"]
    named = [d if isinstance(d, str) else d.model for m in config.models for d in m.deployments] + [
        f for m in config.models for f in m.fallbacks
    ]
    return [*listed, *bare, *named], [*listed, *named]


def watched(router: Router, notifier: Notifier) -> None:
    """Have ``notifier`` hear what ``router`` sees: deployments taken out and back, and
    upstream keys disabled (each router, the first and every live swap's)."""
    router.health.listener = notifier.channel
    for provider in router.providers.values():
        if isinstance(provider, HTTPProvider):
            name = provider.name
            provider.keys.on_disabled = lambda key, status, name=name: notifier.key_disabled(
                name, key.id, status, key.disabled or ""
            )


def error_frame(protocol: str, error: Error) -> bytes:
    """An in-stream error frame in a client protocol (for streams read from Redis)."""
    return REGISTRY.client(protocol).error_frame(error)


def create_app(config: Config, host: str | None = None, worker: Worker | None = None) -> Front:
    """The gateway as an ASGI app; ``app.state.gateway`` is its ``Gateway``. ``host``:
    the address it is bound to (a name there is a Host it serves, see ``door.py``);
    ``worker``: which of ``serve --workers N`` this process is (``workers.py``)."""
    registry = ChannelRegistry(config, build_router, lambda router: swap(router))
    router = registry.first()
    notifier = Notifier(config.webhook_url)
    watched(router, notifier)
    s = config.streams
    settings = HubSettings(s.grace, s.retention, s.max_stream_bytes, s.max_total_bytes)
    mirror = None
    if config.redis_url:  # imported only when used: redis-py costs memory and start time
        from ..streams.redis_mirror import RedisMirror

        mirror = RedisMirror(config.redis_url, s.retention, error_frame)
    hub = StreamHub(settings, mirror, error_frame)
    metrics = Metrics(worker.metrics_dir if worker is not None else None)
    metrics.name(*served_names(config, router))
    accounts = Accounts(config)
    gateway = Gateway(config, router, hub, metrics, accounts)
    if worker is not None:  # says which worker served: X-Tokenrelay-Worker, /health
        gateway.worker = str(worker.index)
    kept = Kept(accounts, config.responses.retention_seconds)
    gateway.kept = kept
    background = gateway.background = Background(gateway, kept)
    metrics.watch(hub, lambda: gateway.router.deployments())

    def swap(new: Router) -> None:  # one assignment: each request reads the router once
        new.carry_health(gateway.router)
        watched(new, notifier)
        gateway.router = new
        metrics.name(*served_names(config, new))

    admin = AdminAPI(None, config.master_key, on_change=accounts.keys_changed)
    channels_api = ChannelsAPI(registry, config.master_key)
    accounts.notifier = notifier
    prober = Prober(lambda: gateway.router, config.probes, None)
    status = StatusRoutes(
        lambda: gateway.router, accounts, admin, config.status_page, config.probes.prompt
    )

    chat_streams = ChatStreams(gateway)  # its tokens in Redis with redis_url, else here

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await accounts.start()
        admin.store = channels_api.store = accounts.store
        assert accounts.store is not None
        await registry.start(ChannelStore(accounts.store.engine, SecretBox.from_env()))
        await hub.start()
        prober.writer = accounts.writer
        prober.start()
        shared = metrics.shared
        publishing = asyncio.create_task(shared.every()) if shared is not None else None
        yield
        if publishing is not None:
            publishing.cancel()
        await prober.aclose()
        await notifier.aclose()
        await hub.aclose()
        await registry.aclose()
        await gateway.router.aclose()
        await kept.close()
        await chat_streams.aclose()
        await accounts.close()

    api = API(gateway)
    api.figures = status.figures
    app = Starlette(
        routes=[
            *api.routes(),
            *background.routes(),
            *kept.routes(),
            *count_routes(TokenCounter(gateway)),
            *embedding_routes(Embeddings(gateway)),
            *chat_stream_routes(chat_streams),
            *web_routes(),
            *admin_page_routes(),
            *stats_routes(admin),
            *channels_api.routes,
            *status.routes(status_page_route()),
            *admin.routes,  # last: its catch-all answers any other /admin/... path
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.gateway = gateway
    app.state.channels = registry
    door = Door(config.http, open_mode=config.master_key is None, bind_host=host)
    return Front(app, api, door)


class Front:
    """The ASGI entry point. The chat routes, whose responses stream, are served here
    directly: Starlette's middleware stack would wrap ``send`` three times, a cost paid
    on every chunk. Everything else goes through the Starlette app."""

    def __init__(self, app: Starlette, api: API, door: Door) -> None:
        self.app = app
        self.api = api
        self.door = door
        ingress = api.ingress
        self.hot = frozenset(ingress.chat)  # (method, path) of every fixed chat route
        self.heads = ingress.heads  # what chat routes with a parameter start with
        self.ingress = ingress
        self.key_params = ingress.key_params
        self.state = app.state
        self.pacer = Pacer(api.gateway.config.starts_per_turn)

    def _hot(self, scope: Scope) -> bool:
        """A chat route: a fixed one by one set lookup, one with a parameter (the model
        in Gemini's path) by its head, then its tail."""
        path = scope["path"]
        if (scope["method"], path) in self.hot:
            return True
        return (
            scope["method"] == "POST"
            and path.startswith(self.heads)
            and self.ingress.match_chat(path) is not None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            verdict = self.door.admit(scope)
            if verdict is not None:
                if not isinstance(verdict, list):  # refused, or a preflight answered
                    await verdict(scope, receive, send)
                    return
                send = adding(send, verdict)  # CORS headers for an allowed origin
        if scope["type"] == "http" and self.key_params and scope.get("query_string"):
            _key_from_query(scope, self.key_params)
        if scope["type"] == "http" and self._hot(scope):
            await self.pacer.turn()
            try:
                response = await self.api.serve_chat(scope, receive)
            except Exception as exc:
                response = await server_error(Request(scope, receive), exc)
            await response(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await refuse_websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Every other request gets one access line with its path and status (the chat
        # routes' line is the exchange's, in relay.py): a client's calls can be audited.
        status = 0

        async def send_logged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            access.info("http %s %s status=%d", scope["method"], scope["path"], status)


def _key_from_query(scope: Scope, key_params: list[tuple[bytes, bytes]]) -> None:
    """A key sent as a query parameter a protocol declares (Gemini's ``?key=``) is read
    as that protocol's credential header, unless the request carries that header already.
    Only ``scope["path"]`` (no query) is ever logged, so the key never is."""
    query: bytes = scope["query_string"]
    for param, header in key_params:
        if param not in query:
            continue
        for item in query.split(b"&"):
            if item.startswith(param):
                value = unquote_to_bytes(item[len(param) :].replace(b"+", b" "))
                headers = scope["headers"]
                if not any(name == header for name, _ in headers):
                    scope["headers"] = [*headers, (header, value)]
                return


WEBSOCKET_REFUSAL = 426
"""Measured with Codex 0.171 (``supports_websockets = true``): 426 -> one attempt, then
HTTPS (0.5 s for a whole ``codex exec``); 403, 404 and 405 -> five reconnects with
backoff first (about 7 s)."""


async def refuse_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """No route speaks WebSocket. Codex tries the Responses WebSocket transport first
    (``GET /v1/responses`` with an upgrade) when a provider says ``supports_websockets``:
    a plain ``426 Upgrade Required`` with an OpenAI-shaped body, sent at once, makes it
    fall back to HTTPS at once. Without the denial-response extension: a close."""
    await receive()  # websocket.connect
    access.info("http WEBSOCKET %s status=%d", scope["path"], WEBSOCKET_REFUSAL)
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    body = (
        b'{"error":{"message":"This gateway serves the Responses API over HTTPS only.",'
        b'"type":"invalid_request_error","param":null,"code":"websocket_unsupported"}}'
    )
    await send(
        {
            "type": "websocket.http.response.start",
            "status": WEBSOCKET_REFUSAL,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})
