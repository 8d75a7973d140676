"""OpenAI's legacy Completions API (``POST /v1/completions``, ``text_completion``
objects), client side and upstream side: ``codec.py`` (requests, bodies, errors),
``stream.py`` (frames <-> events, and the same-protocol passthrough).

It is an endpoint of OpenAI-compatible upstreams, not a protocol of its own on the
upstream side (``endpoint_of``): a provider of protocol ``openai`` serves it when its
``endpoints`` list ``completions`` (the default); the local models answer it too.
"""

from __future__ import annotations

from ..base import ProtocolSpec, Route
from ..openai import COST
from ..openai import codec as openai
from . import codec

PROTOCOL = ProtocolSpec(
    name=codec.name,
    client=codec,
    upstream=codec,
    routes=(Route("chat", "/v1/completions"), Route("chat", "/completions")),
    auth=openai.headers,
    endpoint_of=(openai.name, "completions"),
    cost=COST,
)
