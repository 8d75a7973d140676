"""Embeddings, on every client protocol's ``embed`` routes (``POST /v1/embeddings`` and
``/embeddings``; Gemini's ``models/{model}:embedContent`` and ``:batchEmbedContents``):
a short path of its own, since an embedding is one answer, not a stream. The same parts as a chat request, in the same
order: the key (401), the model's access and limits (``Accounts.admit``), the router's
plan with its attempts (retries, fallbacks, breakers, timeouts: ``Attempts.call``),
the provider's ``embed``, then one usage row with its cost (``Accounts.settle``, via
the request's ``Exchange``). Errors are in the client protocol's shape; an upstream's
reaches the client with its status, type, message, code and ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..embeddings import EmbeddingAnswer, EmbeddingRequest
from ..events import ChatRequest, GatewayError, Message, Part, TextPart
from ..ids import token_hex
from ..protocols.base import ClientProtocol, EmbeddingClient
from ..protocols.registry import REGISTRY
from ..router import Deployment
from .api import read_body
from .attempts import Attempts
from .exchange import Exchange
from .relay import Gateway

_json_decode = msgspec.json.decode


def _canon(request: EmbeddingRequest) -> ChatRequest:
    """The request as the accounts see it: its texts as one prompt (what limits estimate
    and an estimated count is made of), nothing generated."""
    parts: list[Part] = [TextPart(t) for t in request.inputs or ()]
    return ChatRequest(request.model, [Message("user", parts)], max_tokens=1)


class Embeddings:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def handler(
        self, client: ClientProtocol, wire: EmbeddingClient, fixed: dict[str, str]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def create(request: Request) -> Response:
            params = {**fixed, **{k: str(v) for k, v in request.path_params.items()}}
            return await self.create(request, client, wire, params)

        return create

    async def create(
        self,
        request: Request,
        client: ClientProtocol,
        wire: EmbeddingClient,
        params: dict[str, str],
    ) -> Response:
        gateway = self.gateway
        exchange = Exchange(
            f"req_{token_hex(12)}", "embeddings", metrics=gateway.metrics, accounts=gateway.accounts
        )
        try:
            principal = await gateway.accounts.principal(request.headers)
            raw = await read_body(request.receive, request.headers, gateway.config.max_body_bytes)
            try:
                data = _json_decode(raw)
            except msgspec.DecodeError as exc:
                raise GatewayError(
                    "invalid_request", f"The request body is not valid JSON: {exc}"
                ) from None
            asked = wire.decode_request(data, params)
            exchange.model = asked.model
            exchange.decoded = True  # a valid request: it gets its usage row
            canon = _canon(asked)
            exchange.tally.request = canon
            exchange.admission = await gateway.accounts.admit(principal, canon)
            attempts = Attempts(
                gateway.router.plan(asked.model),
                gateway.config.retries,
                exchange.request_id,
                gateway.metrics.retried,
                limiter=gateway.accounts.limiter,
            )
            exchange.attempts = attempts
            answer = await attempts.call(lambda d: _embed(d, asked))
            body = wire.encode_response(asked, answer)
        except GatewayError as error:
            return gateway.error_response(client, error, exchange)
        exchange.tally.usage = answer.usage
        exchange.tally.finish_reason = "stop"
        exchange.finish("ok")
        headers = {"x-request-id": exchange.request_id}
        headers.update((k.decode(), v.decode()) for k, v in attempts.headers())
        return Response(body, media_type="application/json", headers=headers)


async def _embed(deployment: Deployment, request: EmbeddingRequest) -> EmbeddingAnswer:
    embed = getattr(deployment.provider, "embed", None)  # (providers.base.Embedder)
    if embed is None:
        raise GatewayError(
            "invalid_request",
            f"The model {request.model!r} does not serve embeddings.",
            code="endpoint_not_supported",
            param="model",
        )
    answer: EmbeddingAnswer = await embed(request, deployment.model)
    return answer


def embedding_routes(embeddings: Embeddings) -> list[BaseRoute]:
    """Every client protocol's ``embed`` routes (and under its prefix)."""
    routes: list[BaseRoute] = []
    for spec in REGISTRY.clients():
        if spec.client is None or spec.embed_client is None:
            continue
        for route in spec.routes:
            if route.kind != "embed":
                continue
            create = embeddings.handler(spec.client, spec.embed_client, dict(route.fixed))
            prefixes = ("", spec.prefix) if spec.prefix else ("",)
            routes += [Route(p + route.path, create, methods=["POST"]) for p in prefixes]
    return routes
