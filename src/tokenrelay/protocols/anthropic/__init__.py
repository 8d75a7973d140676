"""The Anthropic Messages protocol, both roles: ``codec.py`` (the surface), ``request.py``
(wire -> canon), ``translate.py`` (canon -> wire, and what it adjusts), ``stream.py``
(frames <-> events, and the passthrough), ``wire.py`` (the shared vocabulary).

The ``anthropic`` SDK with ``base_url=…/anthropic`` posts to ``/anthropic/v1/messages``:
every route under ``/anthropic`` answers in this protocol's shape, and so does a request
that carries ``anthropic-version`` (``GET /v1/models``)."""

from __future__ import annotations

from ..base import ProtocolSpec, Route, Translation
from . import codec

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
)
