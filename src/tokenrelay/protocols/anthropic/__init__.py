"""The Anthropic Messages protocol, both roles: ``codec.py`` (the surface), ``request.py``
(wire -> canon), ``translate.py`` (canon -> wire, and what it adjusts), ``stream.py``
(frames <-> events, and the passthrough), ``wire.py`` (the shared vocabulary).

The ``anthropic`` SDK with ``base_url=…/anthropic`` posts to ``/anthropic/v1/messages``:
every route under ``/anthropic`` answers in this protocol's shape, and so does a request
that carries ``anthropic-version`` (``GET /v1/models``)."""

from __future__ import annotations

import re
from typing import Any

from ..base import CostPlace, ProtocolSpec, Route, Translation
from . import codec


def final_usage(event: str | None, data: Any) -> dict[str, Any] | None:
    """The usage of ``message_delta`` (the counts of the whole answer)."""
    if isinstance(data, dict) and data.get("type") == "message_delta":
        usage = data.setdefault("usage", {})
        return usage if isinstance(usage, dict) else None
    return None


PROTOCOL = ProtocolSpec(
    name=codec.name,
    client=codec,
    upstream=codec,
    routes=(
        Route("chat", "/v1/messages"),
        Route("count", "/v1/messages/count_tokens"),
        Route("models", "/v1/models"),
    ),
    prefix="/anthropic",
    marker="anthropic-version",
    model_list=codec.model_list,
    auth=codec.headers,
    decode_body=codec.decode_response,
    translation=Translation(
        "Anthropic upstream", "protocols/anthropic/translate.py ADJUSTMENTS", codec.ADJUSTMENTS
    ),
    recordings=("anthropic/*.sse",),
    cost=CostPlace(re.compile(rb'"type"\s*:\s*"message_delta"'), final_usage),
)
