"""The OpenAI Responses protocol (``POST /v1/responses``), both roles, with the state
the gateway keeps (``state.py``: stored responses, ``previous_response_id``): ``codec.py`` (the surface), ``request.py`` (wire -> canon), ``translate.py``
(canon -> wire, and what it drops), ``encoder.py`` / ``decoder.py`` (events <-> frames),
``passthrough.py`` (same protocol in and out), ``body.py`` (the non-streaming body),
``wire.py`` (the shared vocabulary)."""

from __future__ import annotations

import re
from typing import Any

from ..base import CostPlace, ProtocolSpec, Route, Translation, bearer
from . import codec
from .state import STATE

_ENDS = ("response.completed", "response.incomplete")


def final_usage(event: str | None, data: Any) -> dict[str, Any] | None:
    """The usage of the ``response`` in ``response.completed`` (or ``.incomplete``)."""
    if isinstance(data, dict) and data.get("type") in _ENDS:
        response = data.get("response")
        usage = response.get("usage") if isinstance(response, dict) else None
        return usage if isinstance(usage, dict) else None
    return None


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
    cost=CostPlace(re.compile(rb'"response\.(?:completed|incomplete)"'), final_usage),
)
