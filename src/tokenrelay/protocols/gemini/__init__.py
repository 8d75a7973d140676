"""The Gemini ``generateContent`` protocol, both roles: ``codec.py`` (the surface:
upstream requests, errors, what translation drops), ``request.py`` (client wire ->
canon), ``egress.py`` (events -> client chunks, the passthrough, bodies, errors),
``stream.py`` (upstream frames -> events), ``schema.py`` (the JSON Schema rewrite).

Gemini clients (``google-genai``, Gemini CLI with ``GOOGLE_GEMINI_BASE_URL``) call
``/v1beta/models/{model}:generateContent`` and ``:streamGenerateContent`` (SSE with
``alt=sse``, one JSON array without), ``:countTokens``, ``GET /v1beta/models[/{model}]``;
the model is in the path (``models/local/echo:streamGenerateContent``: names keep
their slashes), the key in ``x-goog-api-key`` or ``?key=``."""

from __future__ import annotations

from ..base import ProtocolSpec, Route, Translation
from . import codec

_MODEL = "/v1beta/models/{model:path}"

PROTOCOL = ProtocolSpec(
    name=codec.name,
    client=codec,
    upstream=codec,
    routes=(
        Route("chat", _MODEL + ":generateContent", (("method", "generateContent"),)),
        Route("chat", _MODEL + ":streamGenerateContent", (("method", "streamGenerateContent"),)),
        Route("count", _MODEL + ":countTokens"),
        Route("models", "/v1beta/models"),
        Route("model", _MODEL),
    ),
    model_list=codec.model_list,
    model_info=codec.model_info,
    auth=codec.headers,
    credentials=("x-goog-api-key",),
    key_param="key",
    translation=Translation("Gemini upstream", "protocols/gemini/codec.py DROPPED", codec.DROPPED),
)
