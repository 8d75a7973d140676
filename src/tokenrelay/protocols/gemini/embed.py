"""Embeddings on the Gemini wire, both roles.

Upstream: one ``models/{m}:batchEmbedContents`` request for all the inputs
(``dimensions`` -> ``outputDimensionality``), its ``embeddings[].values`` back as
vectors in input order. A Gemini client's requests go as written (``taskType``,
``title`` and the rest kept; only each ``model`` rewritten) and the answer comes back as
written. Without ``usageMetadata.promptTokenCount`` in the answer (Gemini's
embedding answers usually count nothing), the usage is the documented estimate
(``fold.CHARS_PER_TOKEN``), marked estimated.

Client (``google-genai``'s ``embed_content``, which calls ``batchEmbedContents``;
``embedContent`` for one content): each content's text parts joined are one input; the
first request's ``outputDimensionality`` is the ``dimensions`` of all; a content with
other parts can only go to a Gemini upstream. An ``embedContent`` answer is the batch
answer's first embedding as ``embedding``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from ...embeddings import EmbeddingAnswer, EmbeddingRequest
from ...events import GatewayError, Usage
from ...fold import estimate_tokens
from .codec import decode_error as decode_error
from .codec import name

_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode
SINGLE = "embedContent"
"""The route's ``method`` for one content (else ``batchEmbedContents``)."""


def _name(model: str) -> str:
    return model[len("models/") :] if model.startswith("models/") else model


# --- client ---------------------------------------------------------------------------


def _invalid(message: str, param: str) -> GatewayError:
    return GatewayError("invalid_request", message, param=param)


def _requests(body: Any, single: bool) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object.", "body")
    requests = [body] if single else body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise _invalid("'requests' must be a non-empty array.", "requests")
    for r in requests:
        content = r.get("content") if isinstance(r, dict) else None
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list) or not parts:
            raise _invalid("Each request needs 'content' with a non-empty 'parts'.", "content")
    return requests


def _text(request: dict[str, Any]) -> str | None:
    """The content's text parts joined, or ``None`` when it has another kind of part."""
    texts: list[str] = []
    for part in request["content"]["parts"]:
        text = part.get("text") if isinstance(part, dict) else None
        if not isinstance(text, str):
            return None
        texts.append(text)
    return "".join(texts)


def decode_request(body: Any, params: Mapping[str, str]) -> EmbeddingRequest:
    """A Gemini client's body (the model is the path's), checked for what the gateway
    needs; the rest is the upstream's to judge."""
    single = params.get("method") == SINGLE
    requests = _requests(body, single)
    texts = [_text(r) for r in requests]
    inputs = None if any(t is None for t in texts) else [t for t in texts if t is not None]
    dimensions = requests[0].get("outputDimensionality")
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1
    ):
        raise _invalid("'outputDimensionality' must be a positive integer.", "outputDimensionality")
    model = _name(params.get("model", ""))
    assert isinstance(body, dict)  # (checked by _requests)
    return EmbeddingRequest(model, inputs, body, dimensions, protocol=name, single=single)


def encode_response(request: EmbeddingRequest, answer: EmbeddingAnswer) -> bytes:
    """A Gemini upstream's answer as written (``embedContent``: its first embedding as
    ``embedding``, the other fields kept), or the vectors in Gemini's shape."""
    if answer.raw is not None:
        if not request.single:
            return answer.raw
        try:
            data = _decode(answer.raw)
        except msgspec.DecodeError:
            data = None
        embeddings = data.get("embeddings") if isinstance(data, dict) else None
        if not isinstance(embeddings, list) or not embeddings:
            raise _malformed(0, 1)
        assert isinstance(data, dict)
        rest = {k: v for k, v in data.items() if k != "embeddings"}
        return _encode({"embedding": embeddings[0], **rest})
    if request.single:
        return _encode({"embedding": {"values": answer.vectors[0]}})
    return _encode({"embeddings": [{"values": v} for v in answer.vectors]})


# --- upstream -------------------------------------------------------------------------


def url(base_url: str, model: str) -> str:
    return f"{base_url.rstrip('/')}/models/{_name(model)}:batchEmbedContents"


def encode_request(request: EmbeddingRequest, model: str) -> bytes:
    target = f"models/{_name(model)}"
    if request.protocol == name:  # a Gemini client's requests, as written
        asked = _requests(request.body, request.single)
        return _encode({"requests": [{**r, "model": target} for r in asked]})
    one: dict[str, Any] = {"model": target}
    if request.dimensions is not None:
        one["outputDimensionality"] = request.dimensions
    texts = request.texts()
    return _encode({"requests": [{**one, "content": {"parts": [{"text": t}]}} for t in texts]})


def decode_answer(body: bytes, request: EmbeddingRequest) -> EmbeddingAnswer:
    try:
        data = _decode(body)
    except msgspec.DecodeError:
        data = None
    meta = data.get("usageMetadata") if isinstance(data, dict) else None
    counted = meta.get("promptTokenCount") if isinstance(meta, dict) else None
    if isinstance(counted, int):
        usage = Usage(input=counted)
    elif request.inputs is not None:
        usage = Usage(input=sum(estimate_tokens(len(t)) for t in request.inputs), estimated=True)
    else:  # non-text parts: the estimate of the body's JSON
        usage = Usage(input=estimate_tokens(len(_encode(request.body))), estimated=True)
    if request.protocol == name:
        return EmbeddingAnswer(usage, raw=body)
    return EmbeddingAnswer(usage, _vectors(data, len(request.texts())))


def _malformed(found: int, count: int) -> GatewayError:
    return GatewayError(
        "upstream",
        f"the upstream's batchEmbedContents answer has {found} embeddings for {count} inputs",
        status=502,
        code="upstream_malformed",
    )


def _vectors(data: Any, count: int) -> list[list[float]]:
    """The vectors of a ``batchEmbedContents`` answer (a 502 when it is not one for
    ``count`` inputs)."""
    items = data.get("embeddings") if isinstance(data, dict) else None
    vectors: list[list[float]] = []
    for item in items if isinstance(items, list) else ():
        values = item.get("values") if isinstance(item, dict) else None
        if isinstance(values, list) and all(isinstance(x, int | float) for x in values):
            vectors.append([float(x) for x in values])
    if len(vectors) != count:
        raise _malformed(len(vectors), count)
    return vectors
