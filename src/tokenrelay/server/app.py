"""The ASGI application, assembled from the configuration."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from ..config import Config, TimeoutsConfig
from ..events import Error
from ..metrics import Metrics
from ..notify import Notifier, install
from ..protocols.registry import REGISTRY
from ..providers.base import Provider
from ..providers.http import Endpoint, HTTPProvider
from ..providers.local import LocalProvider
from ..router import ModelSpec, Router, Timeouts
from ..streams.hub import HubSettings, StreamHub
from .accounts import Accounts
from .admin import AdminAPI
from .admin_stats import stats_routes
from .api import API, http_error, server_error
from .count_tokens import TokenCounter, count_routes
from .door import Door, adding
from .pacing import Pacer
from .probes import Prober
from .relay import Gateway
from .status import StatusRoutes
from .web import admin_page_routes, status_page_route, web_routes

access = logging.getLogger("tokenrelay.access")


def _timeouts(t: TimeoutsConfig) -> Timeouts:
    return Timeouts(t.connect, t.first_token, t.idle, t.total)


def build_router(config: Config) -> Router:
    """Providers, their timeouts, and the configured model names, as a router."""
    providers: list[Provider] = []
    timeouts: dict[str, Timeouts] = {}
    if config.local.enabled:
        providers.append(LocalProvider(config.local.rate))
    for p in config.providers:
        timeouts[p.name] = Timeouts().merged(_timeouts(p.timeouts))
        endpoint = Endpoint(
            p.base_url, p.api_key, dict(p.headers), timeouts[p.name].connect, p.anthropic_betas
        )
        codec = REGISTRY.upstream(p.protocol)
        providers.append(HTTPProvider(p.name, codec, endpoint, list(p.models)))
    models = {
        m.name: ModelSpec(
            [(d, 1.0) if isinstance(d, str) else (d.model, d.weight) for d in m.deployments]
            or [(m.name, 1.0)],
            list(m.fallbacks),
            _timeouts(m.timeouts),
            m.images,
        )
        for m in config.models
    }
    r = config.retries
    text_only = {p.name for p in config.providers if not p.images}
    rule = (r.breaker_failures, r.breaker_cooldown, r.breaker_window)
    return Router(providers, timeouts, models, rule, text_only)


def served_names(config: Config, router: Router) -> tuple[list[str], list[str]]:
    """The model and deployment names served by name (the metrics' labels): configured,
    listed, and the providers' listed bare names; not what a "*" provider passes on."""
    listed = [m for m, _ in router.listed()]
    bare = [m for p in router.providers.values() for m in p.models() if m != "*"]
    named = [d if isinstance(d, str) else d.model for m in config.models for d in m.deployments] + [
        f for m in config.models for f in m.fallbacks
    ]
    return [*listed, *bare, *named], [*listed, *named]


def error_frame(protocol: str, error: Error) -> bytes:
    """An in-stream error frame in a client protocol (for streams read from Redis)."""
    return REGISTRY.client(protocol).error_frame(error)


def create_app(config: Config, host: str | None = None) -> Front:
    """The gateway as an ASGI app; ``app.state.gateway`` is its ``Gateway``. ``host``:
    the address it is bound to (a name there is a Host it serves, see ``door.py``)."""
    router = build_router(config)
    s = config.streams
    settings = HubSettings(s.grace, s.retention, s.max_stream_bytes, s.max_total_bytes)
    mirror = None
    if config.redis_url:  # imported only when used: redis-py costs memory and start time
        from ..streams.redis_mirror import RedisMirror

        mirror = RedisMirror(config.redis_url, s.retention, error_frame)
    hub = StreamHub(settings, mirror, error_frame)
    metrics = Metrics()
    metrics.name(*served_names(config, router))
    metrics.watch(hub, router.deployments)
    accounts = Accounts(config)
    gateway = Gateway(config, router, hub, metrics, accounts)
    admin = AdminAPI(None, config.master_key, on_change=accounts.keys_changed)
    notifier = Notifier(config.webhook_url)
    install(notifier)
    router.health.listener = notifier.channel
    accounts.notifier = notifier
    prober = Prober(router, config.probes, None)
    status = StatusRoutes(router, accounts, admin, config.status_page, config.probes.prompt)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await accounts.start()
        admin.store = accounts.store
        await hub.start()
        prober.writer = accounts.writer
        prober.start()
        yield
        await prober.aclose()
        await notifier.aclose()
        await hub.aclose()
        await router.aclose()
        await accounts.close()

    api = API(gateway)
    api.figures = status.figures
    app = Starlette(
        routes=[
            *api.routes(),
            *count_routes(TokenCounter(gateway)),
            *web_routes(),
            *admin_page_routes(),
            *stats_routes(admin),
            *status.routes(status_page_route()),
            *admin.routes,  # last: its catch-all answers any other /admin/... path
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.gateway = gateway
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
        self.hot = frozenset(api.ingress.chat)  # (method, path) of every chat route
        self.state = app.state
        self.pacer = Pacer(api.gateway.config.starts_per_turn)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            verdict = self.door.admit(scope)
            if verdict is not None:
                if not isinstance(verdict, list):  # refused, or a preflight answered
                    await verdict(scope, receive, send)
                    return
                send = adding(send, verdict)  # CORS headers for an allowed origin
        if scope["type"] == "http" and (scope["method"], scope["path"]) in self.hot:
            await self.pacer.turn()
            try:
                response = await self.api.serve_chat(scope, receive)
            except Exception as exc:
                response = await server_error(Request(scope, receive), exc)
            await response(scope, receive, send)
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
