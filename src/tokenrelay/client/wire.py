"""The two wires the SDK speaks, as adapters over the server's own protocols.

A stream is decoded by the very decoders the gateway uses for its upstreams, so the SDK
yields the canonical events of ``tokenrelay.events``. A non-streaming answer is turned
into the same events by the protocol's body decoder (``decode_body``) and folded by the
same ``Fold``, so ``create()`` and a stream's ``final()`` give the same result. Auth
headers, decoders and body decoders come from each protocol's ``PROTOCOL``; what stays
here is the SDK's own request shaping (``body``) and the path under ``base_url``.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from ..events import Event
from ..protocols import anthropic, openai
from ..protocols.base import ProtocolSpec
from ..sse import ServerSentEvent

__all__ = ["ANTHROPIC", "OPENAI", "ProtocolName", "Wire", "wire_for"]

ProtocolName = Literal["openai", "anthropic"]

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; used when the caller gives none


class Decoder(Protocol):
    """A stream decoder: frames -> events; ``done`` once the end marker was seen."""

    @property
    def done(self) -> bool: ...

    def feed(self, frame: ServerSentEvent) -> list[Event]:
        """One frame's events."""
        ...

    def close(self) -> list[Event]:
        """End of the body: an ``Error`` if the stream ended unfinished."""
        ...


class Wire(Protocol):
    """What the SDK needs of a wire format."""

    name: ProtocolName
    path: str

    def headers(self, api_key: str | None) -> dict[str, str]:
        """Authentication (and version) headers."""
        ...

    def body(
        self, model: str, messages: list[dict[str, Any]], params: dict[str, Any], stream: bool
    ) -> dict[str, Any]:
        """The request body."""
        ...

    def decoder(self) -> Decoder:
        """A fresh stream decoder."""
        ...

    def events(self, body: Any) -> list[Event]:
        """A non-streaming answer as the events of the stream it is the fold of."""
        ...


class _Spec:
    """What every wire takes from its protocol's declaration."""

    spec: ProtocolSpec

    def headers(self, api_key: str | None) -> dict[str, str]:
        return self.spec.auth(api_key)

    def decoder(self) -> Decoder:
        assert self.spec.upstream is not None
        return self.spec.upstream.stream_decoder()

    def events(self, body: Any) -> list[Event]:
        assert self.spec.decode_body is not None
        return self.spec.decode_body(body)


class _OpenAI(_Spec):
    name: ProtocolName = "openai"
    path = "/chat/completions"
    spec = openai.PROTOCOL

    def body(
        self, model: str, messages: list[dict[str, Any]], params: dict[str, Any], stream: bool
    ) -> dict[str, Any]:
        body = {"model": model, "messages": messages, **params, "stream": stream}
        if stream and "stream_options" not in params:
            body["stream_options"] = {"include_usage": True}  # .final() reports usage
        return body


class _Anthropic(_Spec):
    name: ProtocolName = "anthropic"
    path = "/messages"
    spec = anthropic.PROTOCOL

    def body(
        self, model: str, messages: list[dict[str, Any]], params: dict[str, Any], stream: bool
    ) -> dict[str, Any]:
        """Messages with role ``system`` become the ``system`` field (Anthropic has no
        system turns); ``max_tokens`` defaults to ``DEFAULT_MAX_TOKENS``."""
        system = [m.get("content") for m in messages if m.get("role") == "system"]
        turns = [m for m in messages if m.get("role") != "system"]
        body: dict[str, Any] = {"model": model, "messages": turns, "max_tokens": DEFAULT_MAX_TOKENS}
        if system and "system" not in params:
            body["system"] = "\n\n".join(str(s) for s in system)
        body.update(params)
        body["stream"] = stream
        return body


OPENAI: Wire = _OpenAI()
ANTHROPIC: Wire = _Anthropic()


def wire_for(protocol: str) -> Wire:
    """The wire named ``protocol`` (``openai`` or ``anthropic``)."""
    if protocol == "openai":
        return OPENAI
    if protocol == "anthropic":
        return ANTHROPIC
    raise ValueError(f"unknown protocol {protocol!r}: use 'openai' or 'anthropic'")
