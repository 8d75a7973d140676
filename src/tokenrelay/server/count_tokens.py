"""``POST /v1/messages/count_tokens`` (and under ``/anthropic``): how many input tokens a
Messages request would use, without running it.

The count comes from where it can be exact: an Anthropic upstream's own
``count_tokens`` (the body forwarded as the client wrote it, only ``model`` rewritten,
the provider's accepted betas passed on, the answer and any error verbatim); a Gemini
upstream's ``countTokens`` (the request translated); the ``local`` models' own
tokenizer (a word a token, as their usage counts). For an OpenAI-compatible upstream,
which has no counting endpoint, it is the documented estimate: one token per
``CHARS_PER_TOKEN`` characters of the JSON of ``system``, ``messages`` and ``tools``
(rounded up; the JSON punctuation makes it err high, the safe side for an agent
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
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..events import ChatRequest, GatewayError, TextPart
from ..fold import CHARS_PER_TOKEN
from ..protocols.anthropic import codec as anthropic
from ..protocols.gemini import codec as gemini
from ..providers.base import Provider
from ..providers.http import HTTPProvider
from ..providers.local import LocalProvider, count_tokens
from .api import read_body
from .relay import Gateway

access = logging.getLogger("tokenrelay.access")
_json_decode = msgspec.json.decode
_json_encode = msgspec.json.Encoder().encode
UPSTREAM_TIMEOUT = 60.0
"""Seconds an upstream may take to count before the estimate is used instead."""


def estimate(body: dict[str, Any]) -> int:
    """The documented estimate (module docstring)."""
    parts = {k: body[k] for k in ("system", "messages", "tools") if k in body}
    return max(1, -(-len(_json_encode(parts)) // CHARS_PER_TOKEN))


def _local_count(request: ChatRequest) -> int:
    return sum(
        count_tokens(p.text) for m in request.messages for p in m.parts if isinstance(p, TextPart)
    )


class TokenCounter:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def count(self, request: Request) -> Response:
        headers = request.headers
        try:
            principal = await self.gateway.accounts.principal(headers)
            raw = await read_body(request.receive, headers, self.gateway.config.max_body_bytes)
            try:
                data = _json_decode(raw)
            except msgspec.DecodeError as exc:
                raise GatewayError(
                    "invalid_request", f"The request body is not valid JSON: {exc}"
                ) from None
            canon = anthropic.decode_count_request(data)
            principal.check_model(canon.model)
            candidate = self.gateway.router.plan(canon.model).next()
            if candidate is None:
                raise GatewayError("not_found", f"The model {canon.model!r} has no deployment.")
            provider, model = candidate.deployment.provider, candidate.deployment.model
            status, body, source = await self._count(provider, model, canon, data, headers)
        except GatewayError as error:
            access.info("count_tokens status=%d %s", error.status, error.code)
            return JSONResponse(anthropic.error_body(error), error.status, error.headers or None)
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
    ) -> tuple[int, bytes, str]:
        if isinstance(provider, LocalProvider):
            if canon.source is not None:
                canon.source.check_translatable()
            return 200, _json_encode({"input_tokens": _local_count(canon)}), "local"
        if isinstance(provider, HTTPProvider):
            protocol = provider.codec.name
            base = provider.endpoint.base_url.rstrip("/")
            try:
                async with asyncio.timeout(UPSTREAM_TIMEOUT):
                    if protocol == anthropic.name:
                        forwarded = {
                            h: v for h in anthropic.FORWARDED_HEADERS if (v := headers.get(h))
                        }
                        status, body = await provider.post(
                            f"{base}/messages/count_tokens",
                            _json_encode({**data, "model": model}),
                            forwarded,
                        )
                        if status == 200:
                            return status, body, "upstream"
                        raise anthropic.decode_error(status, body)
                    if protocol == gemini.name:
                        if canon.source is not None:
                            canon.source.check_translatable()
                        return await self._gemini(provider, base, model, canon)
            except TimeoutError:
                pass
            except GatewayError as exc:
                # No counting route (404, 405, 501), a failing upstream (5xx, or no answer):
                # the estimate. Anything else (a 400 on the body, 401, 429) is the client's.
                if exc.status < 500 and exc.status not in (404, 405):
                    raise
        return 200, _json_encode({"input_tokens": estimate(data)}), "estimate"

    async def _gemini(
        self, provider: HTTPProvider, base: str, model: str, canon: ChatRequest
    ) -> tuple[int, bytes, str]:
        name = model[len("models/") :] if model.startswith("models/") else model
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
        return 200, _json_encode({"input_tokens": total}), "upstream"


def count_routes(counter: TokenCounter) -> list[BaseRoute]:
    """At the root and under ``/anthropic``; ``?beta=true`` (the SDK's beta client, Claude
    Code's ``/context``) is the same route."""
    return [
        Route(f"{prefix}/v1/messages/count_tokens", counter.count, methods=["POST"])
        for prefix in ("", "/anthropic")
    ]
