"""The Gemini ``generateContent`` protocol, both roles: ``codec.py`` (the surface:
upstream requests, errors, what translation drops), ``request.py`` (client wire ->
canon), ``egress.py`` (events -> client chunks, the passthrough, bodies, errors),
``stream.py`` (upstream frames -> events), ``schema.py`` (the JSON Schema rewrite).

Gemini clients (``google-genai``, Gemini CLI with ``GOOGLE_GEMINI_BASE_URL``) call
``/v1beta/models/{model}:generateContent`` (or ``/v1/...``, google-genai's default) and
``:streamGenerateContent`` (SSE with ``alt=sse``, one JSON array without),
``:countTokens``, ``:embedContent`` and ``:batchEmbedContents`` (``embed.py``),
``GET /v1beta/models[/{model}]``;
the model is in the path (``models/local/echo:streamGenerateContent``: names keep
their slashes), the key in ``x-goog-api-key`` or ``?key=``."""

from __future__ import annotations

import re
from typing import Any

from ..base import CostPlace, ProtocolSpec, Route, Translation
from . import codec, embed


def final_usage(event: str | None, data: Any) -> dict[str, Any] | None:
    """The ``usageMetadata`` of the finishing chunk (a candidate's ``finishReason``)."""
    if not isinstance(data, dict) or not isinstance(data.get("usageMetadata"), dict):
        return None
    candidates = data.get("candidates")
    if isinstance(candidates, list) and any(
        isinstance(c, dict) and c.get("finishReason") for c in candidates
    ):
        usage: dict[str, Any] = data["usageMetadata"]
        return usage
    return None


_MODEL = "/v1beta/models/{model:path}"
_STABLE = "/v1/models/{model:path}"  # google-genai's default API version


def _generation(model: str) -> tuple[Route, ...]:
    return (
        Route("chat", model + ":generateContent", (("method", "generateContent"),)),
        Route("chat", model + ":streamGenerateContent", (("method", "streamGenerateContent"),)),
        Route("count", model + ":countTokens"),
        Route("embed", model + ":embedContent", (("method", embed.SINGLE),)),
        Route("embed", model + ":batchEmbedContents", (("method", "batchEmbedContents"),)),
    )


PROTOCOL = ProtocolSpec(
    name=codec.name,
    client=codec,
    upstream=codec,
    routes=(
        *_generation(_MODEL),
        *_generation(_STABLE),  # /v1/models itself stays OpenAI's list
        Route("models", "/v1beta/models"),
        Route("model", _MODEL),
    ),
    model_list=codec.model_list,
    model_info=codec.model_info,
    auth=codec.headers,
    credentials=("x-goog-api-key",),
    key_param="key",
    event_ids=False,  # google-genai and @google/genai parse nothing but data: lines
    translation=Translation(
        "Gemini upstream, and Gemini clients",
        "protocols/gemini/codec.py DROPPED, egress.py CLIENT_DROPPED",
        codec.DROPPED + codec.CLIENT_DROPPED,
    ),
    embeddings=embed,
    embed_client=embed,
    recordings=("gemini/*.sse",),
    cost=CostPlace(re.compile(rb'"finishReason"'), final_usage, body="usageMetadata"),
)
