"""The canonical embeddings request and answer, the records that cross from the server
to a provider for ``POST /v1/embeddings`` and Gemini's ``:embedContent`` /
``:batchEmbedContents`` (embeddings are not streams: they take a short path of their
own, ``server/embeddings.py``, not the chat relay).

When the upstream speaks the client's protocol, the client's body goes through (only
the model rewritten) and so does the answer (``EmbeddingAnswer.raw``); otherwise the
provider returns ``vectors`` the client protocol puts in its own shape (the local
model, an OpenAI client in front of a Gemini upstream and the reverse).
"""

from __future__ import annotations

import base64
import math
import struct
from dataclasses import dataclass, field
from typing import Any

from .events import GatewayError, Usage


@dataclass(slots=True)
class EmbeddingRequest:
    """``inputs`` are the texts (``None`` when the client sent what only an upstream of
    its own protocol can read: OpenAI token arrays, Gemini non-text parts); ``body`` is
    the client's JSON as written, in ``protocol`` (the client's wire); ``single``: the
    client asked for one embedding, not a list (Gemini's ``embedContent``)."""

    model: str
    inputs: list[str] | None
    body: dict[str, Any]
    dimensions: int | None = None
    encoding_format: str = "float"
    protocol: str = "openai"
    single: bool = False

    def texts(self) -> list[str]:
        """The texts, or the 400 a provider that needs them answers to token arrays."""
        if self.inputs is None:
            raise GatewayError(
                "invalid_request",
                "This model embeds text only: 'input' as a string or an array of strings "
                "(not tokens), or Gemini contents of text parts.",
                param="input" if self.protocol == "openai" else "content",
            )
        return self.inputs


@dataclass(slots=True)
class EmbeddingAnswer:
    """A provider's answer: ``raw`` (the body bytes of an upstream of the client's own
    protocol) passed through as written, or ``vectors`` in input order. ``usage`` is
    what the request is charged."""

    usage: Usage
    vectors: list[list[float]] = field(default_factory=list)
    raw: bytes | None = None


def normalized(vector: list[float]) -> list[float]:
    """``vector`` scaled to unit length (a zero vector stays zero)."""
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector


def as_base64(vector: list[float]) -> str:
    """OpenAI's ``encoding_format: base64``: little-endian float32s, base64-encoded (the
    openai SDK asks for this by default and decodes it with numpy or ``struct``)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
