"""The OpenAI Chat Completions protocol, both roles: ``codec.py`` (requests, bodies,
errors), ``stream.py`` (frames <-> events), ``passthrough.py`` (same protocol in and
out), ``translate.py`` (canon -> wire, and what it drops)."""

from __future__ import annotations

import re
from typing import Any

from ..base import CostPlace, ProtocolSpec, Route, Translation, bearer
from . import codec, embeddings


def final_usage(event: str | None, data: Any) -> dict[str, Any] | None:
    """The usage of the last chunk (empty ``choices``, a ``usage`` object)."""
    if isinstance(data, dict) and data.get("choices") == []:
        usage = data.get("usage")
        return usage if isinstance(usage, dict) else None
    return None


COST = CostPlace(re.compile(rb'"choices"\s*:\s*\[\s*\]'), final_usage)
"""Chat Completions and legacy completions: ``usage.cost`` in the usage chunk."""

PROTOCOL = ProtocolSpec(
    name=codec.name,
    client=codec,
    upstream=codec,
    routes=(
        Route("chat", "/v1/chat/completions"),
        Route("chat", "/chat/completions"),
        Route("models", "/v1/models"),
        Route("models", "/models"),
        Route("embed", "/v1/embeddings"),
        Route("embed", "/embeddings"),
    ),
    model_list=codec.model_list,
    auth=bearer,
    decode_body=codec.decode_response,
    embeddings=embeddings,
    embed_client=embeddings,
    translation=Translation(
        "OpenAI-compatible upstream", "protocols/openai/translate.py DROPPED", codec.DROPPED
    ),
    cost=COST,
    recordings=("openai/chat_*.sse", "deepseek/*.sse", "azure/*.sse", "openrouter/*.sse"),
)
