"""``POST /v1/embeddings`` on the OpenAI wire: the client's request read into an
``EmbeddingRequest``, vectors written as OpenAI's ``list`` of ``embedding`` objects
(``encoding_format: base64`` honoured), and an OpenAI-compatible upstream's answer
passed through with only ``model`` rewritten (for a client of another protocol: its
texts sent as ``input``, the vectors read back as floats)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from ...embeddings import EmbeddingAnswer, EmbeddingRequest, as_base64
from ...events import GatewayError, Usage
from ...fold import estimate_tokens
from .codec import decode_error as decode_error
from .codec import name

_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode
MAX_INPUTS = 2048
"""OpenAI's own limit on the inputs of one request."""


def _invalid(message: str, param: str) -> GatewayError:
    return GatewayError("invalid_request", message, param=param)


def decode_request(body: Any, params: Mapping[str, str] | None = None) -> EmbeddingRequest:
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
    return EmbeddingRequest(model, inputs, body, dimensions, encoding, name)


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
    """The client's body for an OpenAI-compatible upstream, only ``model`` rewritten;
    a client of another protocol's texts as ``input`` (floats asked for)."""
    if request.protocol == name:
        return _encode({**request.body, "model": model})
    body: dict[str, Any] = {"model": model, "input": request.texts(), "encoding_format": "float"}
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    return _encode(body)


def decode_answer(body: bytes, request: EmbeddingRequest) -> EmbeddingAnswer:
    """The upstream's answer, charged the upstream's own count (``usage.prompt_tokens``)
    or, without one, the estimate of the texts; kept as written for an OpenAI client,
    read into vectors for another."""
    try:
        data = _decode(body)
    except msgspec.DecodeError:
        data = None
    usage = data.get("usage") if isinstance(data, dict) else None
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    if isinstance(tokens, int):
        charged = Usage(input=tokens)
    else:
        chars = sum(len(t) for t in request.inputs or ())
        charged = Usage(input=estimate_tokens(chars), estimated=True)
    if request.protocol == name:
        return EmbeddingAnswer(charged, raw=body)
    return EmbeddingAnswer(charged, _vectors(data, len(request.texts())))


def _vectors(data: Any, count: int) -> list[list[float]]:
    """The float vectors of an answer's ``data``, in ``index`` order (a 502 when it is
    not an answer for ``count`` inputs)."""
    items = data.get("data") if isinstance(data, dict) else None
    found: dict[int, list[float]] = {}
    for i, item in enumerate(items if isinstance(items, list) else ()):
        vector = item.get("embedding") if isinstance(item, dict) else None
        index = item.get("index", i) if isinstance(item, dict) else i
        if isinstance(vector, list) and all(isinstance(x, int | float) for x in vector):
            found[index if isinstance(index, int) else i] = [float(x) for x in vector]
    if sorted(found) != list(range(count)):
        raise GatewayError(
            "upstream",
            f"the upstream's embeddings answer has {len(found)} float vectors for {count} inputs",
            status=502,
            code="upstream_malformed",
        )
    return [found[i] for i in range(count)]
