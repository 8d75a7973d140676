"""The fake upstream's non-chat endpoints: embeddings in OpenAI's shape
(``POST /v1/embeddings``) and Gemini's (``models/{m}:batchEmbedContents``), and OpenAI's
legacy completions (``POST /v1/completions``, streamed or not, echoing the prompt).

Vectors are deterministic: component ``i`` of a text's vector comes from the SHA-256 of
``i`` and the text, scaled to unit length; ``dimensions`` (or ``outputDimensionality``)
sets the length, default 8. Usage counts one token per word, as the chat routes do.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import time
from typing import Any

from .httpio import Reply
from .plan import StreamPlan
from .wire import encode_json, split_words

DEFAULT_DIMENSIONS = 8


def vector(text: str, dimensions: int) -> list[float]:
    raw = [
        int.from_bytes(hashlib.sha256(b"%d:" % i + text.encode()).digest()[:4], "little") / 2**31
        - 1.0
        for i in range(dimensions)
    ]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def _words(text: str) -> int:
    return len(text.split())


def _error(status: int, message: str) -> Reply:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    return Reply(status=status, body=encode_json(body))


def openai_embeddings(body: dict[str, Any]) -> Reply:
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return _error(400, "'input' must be a string or an array of strings")
    dimensions = body.get("dimensions") or DEFAULT_DIMENSIONS
    b64 = body.get("encoding_format") == "base64"
    data = []
    for i, text in enumerate(texts):
        v = vector(text, int(dimensions))
        embedding: Any = base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() if b64 else v
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    tokens = sum(_words(t) for t in texts)
    reply = {
        "object": "list",
        "data": data,
        "model": body.get("model"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Reply(body=encode_json(reply))


def gemini_batch_embed(body: dict[str, Any]) -> Reply:
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        return _error(400, "'requests' must be a non-empty array")
    out = []
    for request in requests:
        parts = ((request or {}).get("content") or {}).get("parts") or []
        text = "".join(str(p.get("text") or "") for p in parts if isinstance(p, dict))
        dimensions = int(request.get("outputDimensionality") or DEFAULT_DIMENSIONS)
        out.append({"values": vector(text, dimensions)})
    return Reply(body=encode_json({"embeddings": out}))


def completions(body: dict[str, Any], ident: str) -> Reply:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        return _error(400, "'prompt' must be a string")
    texts = split_words(prompt)
    limit = body.get("max_tokens")
    finish = "stop"
    if isinstance(limit, int) and 0 < limit < len(texts):
        texts, finish = texts[:limit], "length"
    created = int(time.time())
    model = body.get("model")
    usage = {
        "prompt_tokens": _words(prompt),
        "completion_tokens": len(texts),
        "total_tokens": _words(prompt) + len(texts),
    }

    def chunk(choices: list[Any], **more: Any) -> dict[str, Any]:
        obj = {"id": ident, "object": "text_completion", "created": created, "model": model}
        return {**obj, "choices": choices, **more}

    def choice(text: str, reason: str | None) -> dict[str, Any]:
        return {"text": text, "index": 0, "logprobs": None, "finish_reason": reason}

    if body.get("stream") is not True:
        whole = chunk([choice("".join(texts), finish)], usage=usage)
        return Reply(body=encode_json(whole))
    events = [b"data: " + encode_json(chunk([choice(t, None)])) + b"\n\n" for t in texts]
    events.append(b"data: " + encode_json(chunk([choice("", finish)])) + b"\n\n")
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        events.append(b"data: " + encode_json(chunk([], usage=usage)) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return Reply(content_type="text/event-stream", stream=StreamPlan(events))
