"""Embeddings on a Gemini upstream: one ``models/{m}:batchEmbedContents`` request for
all the inputs (``dimensions`` -> ``outputDimensionality``), its ``embeddings[].values``
back as vectors in input order. The answer carries no token count, so the usage is the
documented estimate (``fold.CHARS_PER_TOKEN``), marked estimated."""

from __future__ import annotations

from typing import Any

import msgspec

from ...embeddings import EmbeddingAnswer, EmbeddingRequest
from ...events import GatewayError, Usage
from ...fold import estimate_tokens
from .codec import decode_error as decode_error

_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode


def _name(model: str) -> str:
    return model[len("models/") :] if model.startswith("models/") else model


def url(base_url: str, model: str) -> str:
    return f"{base_url.rstrip('/')}/models/{_name(model)}:batchEmbedContents"


def encode_request(request: EmbeddingRequest, model: str) -> bytes:
    one: dict[str, Any] = {"model": f"models/{_name(model)}"}
    if request.dimensions is not None:
        one["outputDimensionality"] = request.dimensions
    texts = request.texts()
    return _encode({"requests": [{**one, "content": {"parts": [{"text": t}]}} for t in texts]})


def decode_answer(body: bytes, request: EmbeddingRequest) -> EmbeddingAnswer:
    count = len(request.texts())
    tokens = sum(estimate_tokens(len(t)) for t in request.texts())
    return EmbeddingAnswer(Usage(input=tokens, estimated=True), _vectors(body, count))


def _vectors(body: bytes, count: int) -> list[list[float]]:
    """The vectors of a ``batchEmbedContents`` answer (a 502 when it is not one for
    ``count`` inputs)."""
    try:
        data = _decode(body)
    except msgspec.DecodeError:
        data = None
    items = data.get("embeddings") if isinstance(data, dict) else None
    vectors: list[list[float]] = []
    for item in items if isinstance(items, list) else ():
        values = item.get("values") if isinstance(item, dict) else None
        if isinstance(values, list) and all(isinstance(x, int | float) for x in values):
            vectors.append([float(x) for x in values])
    if len(vectors) != count:
        raise GatewayError(
            "upstream",
            f"the upstream's batchEmbedContents answer has {len(vectors)} embeddings "
            f"for {count} inputs",
            status=502,
            code="upstream_malformed",
        )
    return vectors
