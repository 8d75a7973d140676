"""``POST /v1/embeddings`` (and ``/embeddings``): a short path of its own, since an
embedding is one answer, not a stream. The same parts as a chat request, in the same
order: the key (401), the model's access and limits (``Accounts.admit``), the router's
plan with its attempts (retries, fallbacks, breakers, timeouts: ``Attempts.call``),
the provider's ``embed``, then one usage row with its cost (``Accounts.settle``, via
the request's ``Exchange``). Errors are in the OpenAI shape; an upstream's reaches the
client with its status, type, message and code.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..embeddings import EmbeddingAnswer, EmbeddingRequest
from ..events import ChatRequest, GatewayError, Message, Part, TextPart
from ..ids import token_hex
from ..protocols.openai import codec as openai
from ..protocols.openai import embeddings as wire
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

    async def create(self, request: Request) -> Response:
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
            asked = wire.decode_request(data)
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
        except GatewayError as error:
            return gateway.error_response(openai, error, exchange)
        exchange.tally.usage = answer.usage
        exchange.tally.finish_reason = "stop"
        exchange.finish("ok")
        headers = {"x-request-id": exchange.request_id}
        headers.update((k.decode(), v.decode()) for k, v in attempts.headers())
        return Response(
            wire.encode_response(asked, answer), media_type="application/json", headers=headers
        )


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
    paths = ("/v1/embeddings", "/embeddings")
    return [Route(p, embeddings.create, methods=["POST"]) for p in paths]
