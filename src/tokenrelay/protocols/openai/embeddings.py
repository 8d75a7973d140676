"""``POST /v1/embeddings`` on the OpenAI wire: the client's request read into an
``EmbeddingRequest``, vectors written as OpenAI's ``list`` of ``embedding`` objects
(``encoding_format: base64`` honoured), and an OpenAI-compatible upstream's answer
passed through with only ``model`` rewritten."""

from __future__ import annotations

from typing import Any

import msgspec

from ...embeddings import EmbeddingAnswer, EmbeddingRequest, as_base64
from ...events import GatewayError, Usage
from ...fold import estimate_tokens
from .codec import decode_error as decode_error

_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode
MAX_INPUTS = 2048
"""OpenAI's own limit on the inputs of one request."""


def _invalid(message: str, param: str) -> GatewayError:
    return GatewayError("invalid_request", message, param=param)


def decode_request(body: Any) -> EmbeddingRequest:
    """The client's body, checked for what the gateway needs (model, input, dimensions,
    encoding_format); the rest is the upstream's to judge."""
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object.", "body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("'model' is required and must be a string.", "model")
    raw = body.get("input")
    inputs: list[str] | None
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        inputs = list(raw)
    elif isinstance(raw, list) and raw and all(isinstance(x, int | list) for x in raw):
        inputs = None  # token arrays: an OpenAI-compatible upstream reads them
    else:
        raise _invalid("'input' must be a string or a non-empty array of strings.", "input")
    if inputs is not None and len(inputs) > MAX_INPUTS:
        raise _invalid(f"'input' may hold at most {MAX_INPUTS} items.", "input")
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1
    ):
        raise _invalid("'dimensions' must be a positive integer.", "dimensions")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise _invalid("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    return EmbeddingRequest(model, inputs, body, dimensions, encoding)


def usage_to_wire(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.input, "total_tokens": usage.input}


def encode_response(request: EmbeddingRequest, answer: EmbeddingAnswer) -> bytes:
    """The answer as the client sees it: a passthrough's body with ``model`` set to the
    name asked for, or the vectors in OpenAI's shape."""
    if answer.raw is not None:
        try:
            data = _decode(answer.raw)
        except msgspec.DecodeError:
            return answer.raw
        if isinstance(data, dict) and "model" in data:
            data["model"] = request.model
            return _encode(data)
        return answer.raw
    b64 = request.encoding_format == "base64"
    items = [
        {"object": "embedding", "index": i, "embedding": as_base64(v) if b64 else v}
        for i, v in enumerate(answer.vectors)
    ]
    body = {
        "object": "list",
        "data": items,
        "model": request.model,
        "usage": usage_to_wire(answer.usage),
    }
    return _encode(body)


def url(base_url: str, model: str) -> str:
    return base_url.rstrip("/") + "/embeddings"


def encode_request(request: EmbeddingRequest, model: str) -> bytes:
    """The client's body for an OpenAI-compatible upstream, only ``model`` rewritten."""
    return _encode({**request.body, "model": model})


def decode_answer(body: bytes, request: EmbeddingRequest) -> EmbeddingAnswer:
    """The upstream's answer, kept as written, charged the upstream's own count
    (``usage.prompt_tokens``) or, without one, the estimate of the texts."""
    try:
        data = _decode(body)
    except msgspec.DecodeError:
        data = None
    usage = data.get("usage") if isinstance(data, dict) else None
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    if isinstance(tokens, int):
        return EmbeddingAnswer(Usage(input=tokens), raw=body)
    chars = sum(len(t) for t in request.inputs or ())
    return EmbeddingAnswer(Usage(input=estimate_tokens(chars), estimated=True), raw=body)
