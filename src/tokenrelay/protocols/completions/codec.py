"""The legacy Completions wire: request -> canon (the prompt as one user message),
the fold -> a ``text_completion`` body, and the upstream request (the client's body as
written, model patched, always streamed with usage asked for)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ...events import ChatRequest, Error, GatewayError, Message, Source, TextPart
from ...fold import Fold, Tally
from ..openai import codec as openai
from ..openai.stream import FINISH_TO_WIRE, usage_to_wire
from ..openai.stream import error_frame as _error_frame
from .stream import CompletionsDecoder, CompletionsEncoder, CompletionsPassthrough

name = "openai-completions"
FORWARDED_HEADERS: tuple[str, ...] = ()
_KNOWN = {"model", "prompt", "stream", "stream_options", "max_tokens", "temperature"}
_KNOWN |= {"top_p", "stop", "seed", "n", "user"}


def _invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError("invalid_request", message, param=param)


def decode_request(body: Any, params: Mapping[str, str] | None = None) -> ChatRequest:
    """Check what the gateway needs (model, prompt, stream, stop, max_tokens); the rest
    (``suffix``, ``echo``, ``logprobs``, ``best_of`` ...) goes on to the upstream. A
    prompt of token ids or of several strings is an OpenAI-compatible upstream's to
    read: the local models refuse it (400 naming ``prompt``)."""
    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("'model' is required and must be a string", "model")
    prompt = body.get("prompt", "")
    untranslatable = None
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        untranslatable = ("'prompt' must be one string for this model", "prompt")
        prompt = ""
    stream = body.get("stream", False)
    if not isinstance(stream, bool | None):
        raise _invalid("'stream' must be a boolean", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _invalid("'stream_options' must be an object", "stream_options")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    elif stop is not None and not (
        isinstance(stop, list) and all(isinstance(s, str) for s in stop)
    ):
        raise _invalid("'stop' must be a string or an array of strings", "stop")
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 0):
        raise _invalid("'max_tokens' must be a non-negative integer", "max_tokens")
    return ChatRequest(
        model=model,
        messages=[Message("user", [TextPart(prompt)])],
        stream=bool(stream),
        max_tokens=max_tokens or None,
        stop=stop,
        include_usage=bool(options and options.get("include_usage")),
        extra={k: v for k, v in body.items() if k not in _KNOWN},
        source=Source(name, body, untranslatable=untranslatable),
    )


# --- upstream side: the completions endpoint of an OpenAI-compatible upstream ---------


def url(base_url: str, model: str, stream: bool) -> str:
    return base_url.rstrip("/") + "/completions"


headers = openai.headers
decode_error = openai.decode_error


def encode_request(request: ChatRequest, model: str) -> dict[str, Any]:
    """The client's body as written (only a completions request reaches this endpoint),
    model patched, streamed, usage asked for (the gateway bills from it)."""
    body = dict(request.source.body) if request.source is not None else {}
    body["model"] = model
    body["stream"] = True
    options = body.get("stream_options")
    body["stream_options"] = {
        **(options if isinstance(options, dict) else {}),
        "include_usage": True,
    }
    return body


def stream_decoder() -> CompletionsDecoder:
    return CompletionsDecoder()


# --- client side --------------------------------------------------------------------


def stream_encoder(request: ChatRequest, model: str, tally: Tally) -> CompletionsEncoder:
    return CompletionsEncoder(model, request.include_usage, tally)


def passthrough(request: ChatRequest, model: str, tally: Tally) -> CompletionsPassthrough:
    return CompletionsPassthrough(model, request.include_usage, tally)


def encode_response(fold: Fold, model: str) -> dict[str, Any]:
    """The ``text_completion`` body: the fold of the stream (reasoning and tool calls,
    which this wire has no slot for, are dropped)."""
    choices = [
        {
            "text": c.text,
            "index": c.index,
            "logprobs": None,
            "finish_reason": FINISH_TO_WIRE.get(c.finish_reason or "stop", "stop"),
        }
        for c in fold.ordered_choices()
    ]
    return {
        "id": fold.id or f"cmpl-{int(time.time() * 1000):x}",
        "object": "text_completion",
        "created": fold.created or int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage_to_wire(fold.usage_or_estimate()),
    }


def error_body(error: GatewayError) -> dict[str, Any]:
    return openai.error_body(error)


def error_frame(error: Error) -> bytes:
    return _error_frame(error)
