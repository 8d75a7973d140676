"""How many input tokens a request would use, without running it: Anthropic's
``POST /v1/messages/count_tokens`` (and under ``/anthropic``) and Gemini's
``POST /v1beta/models/{model}:countTokens``, each answered in its own shape
(``{"input_tokens": N}``, ``{"totalTokens": N}``), on every upstream. The routes are the
client protocols' ``count`` routes in the registry.

The count comes from where it can be exact: an upstream of the client's own protocol
counts the body as the client wrote it (only the model rewritten; for Anthropic the
provider's accepted betas passed on), its answer and any error verbatim; an upstream of
the other counting protocol counts the request translated (Anthropic's
``count_tokens``, Gemini's ``countTokens``); the ``local`` models' own
tokenizer (a word a token, as their usage counts). For an OpenAI-compatible upstream,
which has no counting endpoint, it is the documented estimate: one token per
``CHARS_PER_TOKEN`` characters of the JSON of ``system``, ``messages`` and ``tools``
(Gemini: of ``systemInstruction``, ``contents`` and ``tools``) (rounded up; the JSON punctuation makes it err high, the safe side for an agent
deciding when to compact). The ``x-tokenrelay-count`` response header says which:
``upstream``, ``local`` or ``estimate``; an upstream that fails to count is replaced
by the estimate too.

A count is never a generation: no usage record, no bill, no limits' tokens; it needs
a key that may use the model, like a generation.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..events import ChatRequest, GatewayError, TextPart
from ..fold import CHARS_PER_TOKEN
from ..protocols.anthropic import codec as anthropic
from ..protocols.base import ClientProtocol
from ..protocols.gemini import codec as gemini
from ..protocols.registry import REGISTRY
from ..providers.base import Provider
from ..providers.http import HTTPProvider
from ..providers.local import LocalProvider, count_tokens
from .api import protocol_error, protocol_of, read_body
from .relay import Gateway

access = logging.getLogger("tokenrelay.access")
_json_decode = msgspec.json.decode
_json_encode = msgspec.json.Encoder().encode
UPSTREAM_TIMEOUT = 60.0
"""Seconds an upstream may take to count before the estimate is used instead."""


_ESTIMATED = {
    anthropic.name: ("system", "messages", "tools"),
    gemini.name: ("systemInstruction", "contents", "tools"),
}
"""The fields of a client protocol's body the estimate counts."""


def estimate(body: dict[str, Any], protocol: str = anthropic.name) -> int:
    """The documented estimate (module docstring)."""
    inner = body.get("generateContentRequest")
    if isinstance(inner, dict):  # Gemini's countTokens form with the whole request
        body = inner
    fields = _ESTIMATED.get(protocol, _ESTIMATED[anthropic.name])
    parts = {k: body[k] for k in fields if k in body}
    return max(1, -(-len(_json_encode(parts)) // CHARS_PER_TOKEN))


def _answer(protocol: str, count: int) -> bytes:
    """A count in the client protocol's shape."""
    if protocol == gemini.name:
        return _json_encode({"totalTokens": count})
    return _json_encode({"input_tokens": count})


def _local_count(request: ChatRequest) -> int:
    return sum(
        count_tokens(p.text) for m in request.messages for p in m.parts if isinstance(p, TextPart)
    )


def _gemini_name(model: str) -> str:
    return model[len("models/") :] if model.startswith("models/") else model


class TokenCounter:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.ingress = REGISTRY.ingress()

    async def count(self, request: Request) -> Response:
        headers = request.headers
        client = protocol_of(request)
        params = {k: str(v) for k, v in request.path_params.items()}
        try:
            principal = await self.gateway.accounts.principal(headers)
            raw = await read_body(request.receive, headers, self.gateway.config.max_body_bytes)
            try:
                data = _json_decode(raw)
            except msgspec.DecodeError as exc:
                raise GatewayError(
                    "invalid_request", f"The request body is not valid JSON: {exc}"
                ) from None
            decode = gemini.decode_count_request if client.name == gemini.name else None
            canon = (decode or anthropic.decode_count_request)(data, params)
            principal.check_model(canon.model)
            candidate = self.gateway.router.plan(canon.model).next()
            if candidate is None:
                raise GatewayError("not_found", f"The model {canon.model!r} has no deployment.")
            provider, model = candidate.deployment.provider, candidate.deployment.model
            status, body, source = await self._count(provider, model, canon, data, headers, client)
        except GatewayError as error:
            access.info("count_tokens status=%d %s", error.status, error.code)
            return protocol_error(client, error)
        access.info(
            "count_tokens model=%s deployment=%s/%s status=%d count=%s",
            canon.model,
            provider.name,
            model,
            status,
            source,
        )
        return Response(
            body, status, media_type="application/json", headers={"x-tokenrelay-count": source}
        )

    async def _count(
        self,
        provider: Provider,
        model: str,
        canon: ChatRequest,
        data: dict[str, Any],
        headers: Headers,
        client: ClientProtocol,
    ) -> tuple[int, bytes, str]:
        own = client.name
        if isinstance(provider, LocalProvider):
            if canon.source is not None:
                canon.source.check_translatable()
            return 200, _answer(own, _local_count(canon)), "local"
        if isinstance(provider, HTTPProvider):
            protocol = provider.codec.name
            base = provider.endpoint.base_url.rstrip("/")
            try:
                async with asyncio.timeout(UPSTREAM_TIMEOUT):
                    if protocol == own:  # the client's own protocol: as written, verbatim
                        return await self._as_written(provider, base, model, data, headers, own)
                    if canon.source is not None:
                        canon.source.check_translatable()
                    if protocol in (gemini.name, anthropic.name):
                        translated = self._gemini if protocol == gemini.name else self._anthropic
                        n = await translated(provider, base, model, canon)
                        return 200, _answer(own, n), "upstream"
            except TimeoutError:
                pass
            except GatewayError as exc:
                # No counting route (404, 405, 501), a failing upstream (5xx, or no answer):
                # the estimate. Anything else (a 400 on the body, 401, 429) is the client's.
                if exc.status < 500 and exc.status not in (404, 405):
                    raise
        return 200, _answer(own, estimate(data, own)), "estimate"

    async def _as_written(
        self,
        provider: HTTPProvider,
        base: str,
        model: str,
        data: dict[str, Any],
        headers: Headers,
        protocol: str,
    ) -> tuple[int, bytes, str]:
        if protocol == anthropic.name:
            forwarded = {h: v for h in anthropic.FORWARDED_HEADERS if (v := headers.get(h))}
            status, body = await provider.post(
                f"{base}/messages/count_tokens", _json_encode({**data, "model": model}), forwarded
            )
            if status == 200:
                return status, body, "upstream"
            raise anthropic.decode_error(status, body)
        name = _gemini_name(model)
        inner = data.get("generateContentRequest")
        if isinstance(inner, dict):
            data = {**data, "generateContentRequest": {**inner, "model": f"models/{name}"}}
        status, body = await provider.post(f"{base}/models/{name}:countTokens", _json_encode(data))
        if status == 200:
            return status, body, "upstream"
        raise gemini.decode_error(status, body)

    async def _anthropic(
        self, provider: HTTPProvider, base: str, model: str, canon: ChatRequest
    ) -> int:
        body = anthropic.encode_request(canon, model)
        for key in ("max_tokens", "stream", "temperature", "top_p", "stop_sequences", "metadata"):
            body.pop(key, None)
        status, raw = await provider.post(f"{base}/messages/count_tokens", _json_encode(body))
        if status != 200:
            raise anthropic.decode_error(status, raw)
        count = _json_decode(raw).get("input_tokens")
        if not isinstance(count, int):
            raise GatewayError("upstream", "Anthropic count_tokens answered without input_tokens")
        return count

    async def _gemini(
        self, provider: HTTPProvider, base: str, model: str, canon: ChatRequest
    ) -> int:
        name = _gemini_name(model)
        inner = gemini.encode_request(canon, model)
        inner.pop("generationConfig", None)  # counting needs no sampling settings
        request = {"generateContentRequest": {"model": f"models/{name}", **inner}}
        status, body = await provider.post(
            f"{base}/models/{name}:countTokens", _json_encode(request)
        )
        if status != 200:
            raise gemini.decode_error(status, body)
        total = _json_decode(body).get("totalTokens")
        if not isinstance(total, int):
            raise GatewayError("upstream", "Gemini countTokens answered without totalTokens")
        return total


def count_routes(counter: TokenCounter) -> list[BaseRoute]:
    """Every client protocol's ``count`` routes (Anthropic's at the root and under
    ``/anthropic``; ``?beta=true``, the SDK's beta client and Claude Code's ``/context``,
    is the same route)."""
    return [Route(path, counter.count, methods=["POST"]) for path in counter.ingress.paths("count")]
