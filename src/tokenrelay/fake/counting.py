"""Token counting routes and the context-length error, in each provider's shape.

- ``POST /v1/messages/count_tokens`` (Anthropic): ``{"input_tokens": N}``;
- ``POST /v1beta/models/{model}:countTokens`` (Gemini, a body of ``contents`` or of a
  whole ``generateContentRequest``): ``{"totalTokens": N}``;

N is the fake tokenizer's count (``wire.prompt_tokens``: one token per word). A model
with the option ``too_long=1`` answers chat requests with the 400 each provider sends
for a prompt over the context window, worded as each words it (Claude Code's
auto-compact matches Anthropic's "prompt is too long").
"""

from __future__ import annotations

from typing import Any

from . import wire
from .wire import Proto

CONTEXT_WINDOW = 200_000
"""The window the context-length errors name; the prompt is said to be one over it."""


def count_body(proto: Proto, body: dict[str, Any]) -> bytes:
    """The count answer for ``body``."""
    if proto == "gemini":
        inner = body.get("generateContentRequest")
        tokens = wire.prompt_tokens(proto, inner if isinstance(inner, dict) else body)
        return wire.encode_json({"totalTokens": tokens, "promptTokensDetails": []})
    return wire.encode_json({"input_tokens": wire.prompt_tokens(proto, body)})


def too_long_body(proto: Proto) -> bytes:
    """The 400 body of a prompt over the window, as each provider words it."""
    over = CONTEXT_WINDOW + 1
    error: dict[str, Any]
    if proto == "anthropic":
        error = {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": f"prompt is too long: {over} tokens > {CONTEXT_WINDOW} maximum",
            },
            "request_id": "req_fake_too_long",
        }
    elif proto == "gemini":
        error = {
            "error": {
                "code": 400,
                "message": f"The input token count ({over}) exceeds the maximum number of"
                f" tokens allowed ({CONTEXT_WINDOW}).",
                "status": "INVALID_ARGUMENT",
            }
        }
    else:
        error = {
            "error": {
                "message": f"This model's maximum context length is {CONTEXT_WINDOW} tokens."
                f" However, your messages resulted in {over} tokens. Please reduce the"
                " length of the messages.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        }
    return wire.encode_json(error)
