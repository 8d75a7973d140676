"""The Gemini ``generateContent`` protocol, upstream side only: ``codec.py`` (requests,
errors, what translation drops), ``stream.py`` (frames -> events), ``schema.py`` (the
JSON Schema rewrite)."""

from __future__ import annotations

from ..base import ProtocolSpec, Translation
from . import codec, embed

PROTOCOL = ProtocolSpec(
    name=codec.name,
    upstream=codec,
    auth=codec.headers,
    embeddings=embed,
    translation=Translation("Gemini upstream", "protocols/gemini/codec.py DROPPED", codec.DROPPED),
)
