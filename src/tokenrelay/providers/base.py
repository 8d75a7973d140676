"""The interface every provider meets, the in-process ``local`` one included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from ..affinity import Conversation
from ..embeddings import EmbeddingAnswer, EmbeddingRequest
from ..events import ChatRequest, Event
from ..sse import ServerSentEvent


class Upstream(Protocol):
    """An opened upstream response, past its status check.

    ``protocol`` names the wire format of ``frames()`` (``None`` for an in-process
    provider, which has only ``events()``); ``payloads()`` gives only each frame's data,
    as the bytes that came; ``named()`` each frame's event name and data, as bytes. Each item of any of them is what one network read
    delivered, so the server writes it to the client in one piece.
    Iterating raises ``GatewayError`` when the upstream fails mid-stream.
    """

    protocol: str | None
    key_id: str | None  # the upstream key that served it (None: keyless, in-process)

    def frames(self) -> AsyncIterator[list[ServerSentEvent]]: ...

    def payloads(self) -> AsyncIterator[list[bytes]]: ...

    def named(self) -> AsyncIterator[list[tuple[bytes | None, bytes]]]: ...

    def events(self) -> AsyncIterator[list[Event]]: ...

    async def aclose(self) -> None:
        """Close the upstream request at once (idempotent)."""
        ...


class Provider(Protocol):
    name: str

    def models(self) -> list[str]:
        """Upstream model names served; ``"*"`` means any name is passed through."""
        ...

    async def open(
        self, request: ChatRequest, model: str, conversation: Conversation | None = None
    ) -> Upstream:
        """Send the request; raise ``GatewayError`` if the upstream refuses it.
        ``conversation``: the one the request belongs to (``affinity.py``), which keeps
        it on one upstream key of a channel with several; ``None``: no affinity."""
        ...

    async def aclose(self) -> None: ...


class Embedder(Protocol):
    """A provider that can embed (``POST /v1/embeddings``)."""

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingAnswer:
        """The vectors (or the upstream's answer as written); raise ``GatewayError`` if
        the upstream refuses, or this provider or model does not embed."""
        ...
