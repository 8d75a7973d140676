"""The OpenAI Responses protocol (``POST /v1/responses``), both roles, with the state
the gateway keeps (``state.py``: stored responses, ``previous_response_id``): ``codec.py`` (the surface), ``request.py`` (wire -> canon), ``translate.py``
(canon -> wire, and what it drops), ``encoder.py`` / ``decoder.py`` (events <-> frames),
``passthrough.py`` (same protocol in and out), ``body.py`` (the non-streaming body),
``wire.py`` (the shared vocabulary)."""

from __future__ import annotations

from ..base import ProtocolSpec, Route, Translation, bearer
from . import codec
from .state import STATE

PROTOCOL = ProtocolSpec(
    name=codec.name,
    client=codec,
    upstream=codec,
    routes=(Route("chat", "/v1/responses"), Route("chat", "/responses")),
    auth=bearer,
    translation=Translation(
        "OpenAI Responses (client and upstream)",
        "protocols/responses/translate.py DROPPED",
        codec.DROPPED,
    ),
    recordings=("openai/responses_*.sse",),
    state=STATE,
)
