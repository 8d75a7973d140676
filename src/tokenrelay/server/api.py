"""The client-facing API: chat in every client protocol, models, streams, health, error
shapes. The routes and the protocol of a request come from the protocol registry
(``protocols/registry.py``: a protocol's chat routes and everything under its prefix
speak it, so does a request carrying its marker header; everything else speaks OpenAI).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope

from .. import __version__
from ..events import GatewayError
from ..metrics import CONTENT_TYPE
from ..numbers import decimal
from ..protocols.base import ClientProtocol
from ..protocols.registry import REGISTRY, Ingress
from ..router import not_found
from ..store import DRIVER_ERRORS
from ..streams.hub import parse_event_id
from .body import read_body
from .relay import Gateway
from .scrape import scrape_refusal
from .status import HealthFigures, decorate

__all__ = ["API", "read_body"]

log = logging.getLogger("tokenrelay")
access = logging.getLogger("tokenrelay.access")


def protocol_of(request: Request) -> ClientProtocol:
    return protocol_for(request.scope["path"], request.headers)


def protocol_for(path: str, headers: Headers, ingress: Ingress | None = None) -> ClientProtocol:
    codec = (ingress or REGISTRY.ingress()).protocol_for(path, headers).client
    assert codec is not None  # (the ingress knows client protocols only)
    return codec


def error_response(request: Request, error: GatewayError) -> Response:
    return protocol_error(protocol_of(request), error)


def protocol_error(protocol: ClientProtocol, error: GatewayError) -> Response:
    body = protocol.error_body(error)
    return JSONResponse(body, error.status, error.headers or None)


class API:
    """The handlers, bound to one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.ingress = REGISTRY.ingress()
        self.figures: HealthFigures | None = None  # uptime and latency on each entry

    async def chat(self, request: Request) -> ASGIApp:
        return await self.serve_chat(request.scope, request.receive)

    async def serve_chat(self, scope: Scope, receive: Receive) -> ASGIApp:
        """A chat request in any client protocol, straight from ASGI (the hot path: no
        Starlette ``Request``)."""
        headers = Headers(scope=scope)
        path = scope["path"]
        protocol = protocol_for(path, headers, self.ingress)
        params = self.ingress.params(path, scope.get("query_string", b""))
        return await self.gateway.chat(protocol, receive, headers, params)

    async def models(self, request: Request) -> Response:
        try:
            principal = await self.gateway.accounts.principal(request.headers)
        except GatewayError as error:
            return error_response(request, error)
        visible = set(principal.visible([m for m, _ in self.gateway.router.listed()]))
        listed = [(m, owner) for m, owner in self.gateway.router.listed() if m in visible]
        shape = self.ingress.protocol_for(request.scope["path"], request.headers).model_list
        assert shape is not None  # (only protocols with a model list have its routes)
        body = shape(listed)
        if self.figures is not None:
            with suppress(*DRIVER_ERRORS):  # the database is away: the list without figures
                body = decorate(body, await self.figures.report())
        return JSONResponse(body)

    async def model(self, request: Request) -> Response:
        """``GET /v1/models/{id}`` (ids contain slashes: ``local/echo``): the model's entry
        as the protocol's list shows it (the first item of its list), or 404 in the
        protocol's shape for a name the key does not see listed."""
        if "model_id" not in request.path_params:  # a protocol's own model route
            return await self._model_info(request)
        model_id = request.path_params["model_id"]
        try:
            principal = await self.gateway.accounts.principal(request.headers)
            owners = dict(self.gateway.router.listed())
            if model_id not in owners or not principal.visible([model_id]):
                raise not_found(model_id)
        except GatewayError as error:
            return error_response(request, error)
        shape = self.ingress.protocol_for(request.scope["path"], request.headers).model_list
        assert shape is not None
        body = shape([(model_id, owners[model_id])])
        entry = next(v[0] for v in body.values() if isinstance(v, list) and v)
        return JSONResponse(entry)

    async def _model_info(self, request: Request) -> Response:
        """One model (``GET /v1beta/models/{model}``), as the model list shows it."""
        spec = self.ingress.protocol_for(request.scope["path"], request.headers)
        wanted = str(request.path_params.get("model", "")).removeprefix("models/")
        try:
            principal = await self.gateway.accounts.principal(request.headers)
            for m, owner in self.gateway.router.listed():
                if m == wanted and principal.allows(m) and spec.model_info is not None:
                    return JSONResponse(spec.model_info(m, owner))
            principal.check_model(wanted)
            raise GatewayError(
                "not_found", f"The model {wanted!r} does not exist.", code="model_not_found"
            )
        except GatewayError as error:
            return error_response(request, error)

    async def stream_resume(self, request: Request) -> ASGIApp:
        """Re-attach to a stream: every frame after ``Last-Event-ID`` (or ``?after=``),
        then the live ones, in the protocol the stream was asked in."""
        stream_id = request.path_params["stream_id"]
        after = 0
        try:
            event_id = parse_event_id(request.headers.get("last-event-id"))
            query = request.query_params.get("after")
            if event_id is not None and event_id[0] == stream_id:
                after = event_id[1]
            elif query is not None:
                if (number := decimal(query)) is None:
                    raise GatewayError(
                        "invalid_request",
                        "after must be a sequence number (ASCII digits).",
                        param="after",
                    )
                after = number
            principal = await self.gateway.accounts.principal(request.headers)
            stream = await self.gateway.hub.find(stream_id, principal.owner)
            response = self.gateway.attach(stream, after, retry=True)
        except GatewayError as error:
            self.gateway.metrics.stream_events.labels(f"resume_{error.status}").inc()
            access.info(
                "resume %s after=%d status=%d %s", stream_id, after, error.status, error.code
            )
            return error_response(request, error)
        access.info("resume %s after=%d status=200", stream_id, after)
        return response

    async def stream_cancel(self, request: Request) -> Response:
        """Stop a stream: the upstream is closed at once; readers get a proper end.
        Idempotent: a stream already over answers with its status."""
        stream_id = request.path_params["stream_id"]
        try:
            principal = await self.gateway.accounts.principal(request.headers)
            stream = await self.gateway.hub.find(stream_id, principal.owner)
        except GatewayError as error:
            return error_response(request, error)
        status = await stream.stop()
        return JSONResponse({"id": stream.id, "object": "stream", "status": status})

    async def health(self, request: Request) -> Response:
        body: dict[str, str] = {"status": "ok", "version": __version__}
        if self.gateway.worker is not None:  # serve --workers N: which one answered
            body["worker"] = self.gateway.worker
        return JSONResponse(body)

    async def metrics(self, request: Request) -> Response:
        refusal = scrape_refusal(self.gateway.config, request.headers, request.client)
        if refusal is not None:
            return error_response(request, refusal)
        # off the event loop: a scrape must not hold up the streams (labels are bounded too)
        body = await asyncio.to_thread(self.gateway.metrics.render)
        return Response(body, media_type=CONTENT_TYPE)

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = [
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]
        ingress = self.ingress
        for prefix in ("", *ingress.prefixes()):
            routes += [
                Route(f"{prefix}/v1/streams/{{stream_id}}", self.stream_resume, methods=["GET"]),
                Route(f"{prefix}/v1/streams/{{stream_id}}", self.stream_cancel, methods=["DELETE"]),
                Route(
                    f"{prefix}/v1/streams/{{stream_id}}/cancel",
                    self.stream_cancel,
                    methods=["POST"],
                ),
            ]
        routes += [Route(path, self.chat, methods=["POST"]) for path in ingress.paths("chat")]
        routes += [Route(path, self.models, methods=["GET"]) for path in ingress.paths("models")]
        routes += [Route(path, self.model, methods=["GET"]) for path in ingress.paths("model")]
        routes += [
            Route(f"{path}/{{model_id:path}}", self.model, methods=["GET"])
            for path in ingress.paths("models")
        ]
        return routes


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = {404: "not_found", 405: "invalid_request"}.get(exc.status_code, "invalid_request")
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return error_response(request, GatewayError(kind, message, status=exc.status_code))


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(
        request, GatewayError("server", "The gateway failed to handle the request.")
    )
