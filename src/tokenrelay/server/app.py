"""The ASGI application: routes, request bodies with a size limit, error shapes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from .. import __version__
from ..config import Config, TimeoutsConfig
from ..events import GatewayError
from ..protocols import anthropic, gemini, openai
from ..protocols.base import ClientProtocol
from ..providers.base import Provider
from ..providers.http import Endpoint, HTTPProvider
from ..providers.local import LocalProvider
from ..router import ModelSpec, Router, Timeouts
from ..streams.hub import HubSettings, StreamHub, parse_event_id
from .relay import Gateway

log = logging.getLogger("tokenrelay")

UPSTREAM_CODECS: dict[str, Any] = {"openai": openai, "anthropic": anthropic, "gemini": gemini}


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
        endpoint = Endpoint(p.base_url, p.api_key, dict(p.headers), timeouts[p.name].connect)
        codec = UPSTREAM_CODECS[p.protocol]
        providers.append(HTTPProvider(p.name, codec, endpoint, list(p.models)))
    models = {
        m.name: ModelSpec(
            [(d, 1.0) if isinstance(d, str) else (d.model, d.weight) for d in m.deployments]
            or [(m.name, 1.0)],
            list(m.fallbacks),
            _timeouts(m.timeouts),
        )
        for m in config.models
    }
    r = config.retries
    return Router(providers, timeouts, models, (r.breaker_failures, r.breaker_cooldown))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or a 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    too_large = GatewayError(
        "request_too_large",
        f"The request body is larger than the limit of {limit} bytes.",
        code="request_too_large",
    )
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(config: Config) -> Starlette:
    router = build_router(config)
    s = config.streams
    hub = StreamHub(HubSettings(s.grace, s.retention, s.max_stream_bytes, s.max_total_bytes))
    gateway = Gateway(config, router, hub)

    async def chat_endpoint(protocol: ClientProtocol, request: Request) -> ASGIApp:
        try:
            body = await read_body(request, config.max_body_bytes)
        except GatewayError as error:
            return JSONResponse(protocol.error_body(error), error.status)
        return await gateway.chat(protocol, body, request.headers.get("last-event-id"))

    async def chat_completions(request: Request) -> ASGIApp:
        return await chat_endpoint(openai, request)

    async def models(request: Request) -> Response:
        data = [
            {"id": model_id, "object": "model", "created": 0, "owned_by": owner}
            for model_id, owner in router.listed()
        ]
        return JSONResponse({"object": "list", "data": data})

    def stream_error(error: GatewayError) -> Response:
        return JSONResponse(openai.error_body(error), error.status)

    async def stream_resume(request: Request) -> ASGIApp:
        """Re-attach to a stream: every frame after ``Last-Event-ID`` (or ``?after=``)."""
        stream_id = request.path_params["stream_id"]
        after = 0
        event_id = parse_event_id(request.headers.get("last-event-id"))
        if event_id is not None and event_id[0] == stream_id:
            after = event_id[1]
        elif request.query_params.get("after", "").isdigit():
            after = int(request.query_params["after"])
        try:
            stream = hub.get(stream_id, None)
            return gateway.attach(stream, after, retry=True)
        except GatewayError as error:
            return stream_error(error)

    async def stream_cancel(request: Request) -> Response:
        """Stop a stream: the upstream is closed at once; readers get a proper end."""
        stream_id = request.path_params["stream_id"]
        try:
            stream = hub.get(stream_id, None)
        except GatewayError as error:
            return stream_error(error)
        if not stream.done:
            stream.cancel()
        status = "cancelled" if stream.cancelled else "finished"
        return JSONResponse({"id": stream.id, "object": "stream", "status": status})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = {404: "not_found", 405: "invalid_request"}.get(exc.status_code, "invalid_request")
        message = f"{request.method} {request.url.path}: {exc.detail}"
        error = GatewayError(kind, message, status=exc.status_code)
        return JSONResponse(openai.error_body(error), exc.status_code)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        error = GatewayError("server", "The gateway failed to handle the request.")
        return JSONResponse(openai.error_body(error), 500)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await hub.aclose()
        await router.aclose()

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/models", models, methods=["GET"]),
        Route("/v1/streams/{stream_id}", stream_resume, methods=["GET"]),
        Route("/v1/streams/{stream_id}", stream_cancel, methods=["DELETE"]),
        Route("/v1/streams/{stream_id}/cancel", stream_cancel, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.gateway = gateway
    return app
