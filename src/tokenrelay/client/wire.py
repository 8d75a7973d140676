"""The two wires the SDK speaks, as adapters over the server's own codecs.

A stream is decoded by the very decoders the gateway uses for its upstreams
(``OpenAIStreamDecoder``, ``AnthropicStreamDecoder``), so the SDK yields the canonical
events of ``tokenrelay.events``. A non-streaming answer is turned into the same events
(one per part of the message) and folded by the same ``Fold``, so ``create()`` and a
stream's ``final()`` give the same result.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import msgspec

from ..events import Event, Finish, ReasoningDelta, Start, TextDelta, ToolCallDelta
from ..protocols import anthropic_wire
from ..protocols.anthropic_stream import AnthropicStreamDecoder
from ..protocols.openai_stream import FINISH_FROM_WIRE, OpenAIStreamDecoder, usage_from_wire
from ..sse import ServerSentEvent

__all__ = ["ANTHROPIC", "OPENAI", "ProtocolName", "Wire", "wire_for"]

ProtocolName = Literal["openai", "anthropic"]

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; used when the caller gives none

_json_encode = msgspec.json.Encoder().encode


class Decoder(Protocol):
    """A stream decoder: frames -> events; ``done`` once the end marker was seen."""

    done: bool

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


def bearer_headers(api_key: str | None) -> dict[str, str]:
    """``Authorization: Bearer <key>``, or nothing without a key: how the SDK, the CLI and
    the benchmarks present a tokenrelay (or OpenAI) key."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class _OpenAI:
    name: ProtocolName = "openai"
    path = "/chat/completions"

    def headers(self, api_key: str | None) -> dict[str, str]:
        return bearer_headers(api_key)

    def body(
        self, model: str, messages: list[dict[str, Any]], params: dict[str, Any], stream: bool
    ) -> dict[str, Any]:
        body = {"model": model, "messages": messages, **params, "stream": stream}
        if stream and "stream_options" not in params:
            body["stream_options"] = {"include_usage": True}  # .final() reports usage
        return body

    def decoder(self) -> Decoder:
        return OpenAIStreamDecoder()

    def events(self, body: Any) -> list[Event]:
        """A ``chat.completion`` body as the events of its stream."""
        if not isinstance(body, dict):
            return []
        extra = {}
        if body.get("system_fingerprint"):
            extra["system_fingerprint"] = body["system_fingerprint"]
        out: list[Event] = [
            Start(
                str(body.get("id") or ""),
                str(body.get("model") or ""),
                int(body.get("created") or 0),
                extra=extra,
            )
        ]
        for choice in body.get("choices") or ():
            index = int(choice.get("index") or 0)
            message = choice.get("message") or {}
            reasoning = message.get("reasoning_content") or message.get("reasoning")
            if reasoning:
                out.append(ReasoningDelta(reasoning, choice=index))
            if isinstance(message.get("content"), str) and message["content"]:
                out.append(TextDelta(message["content"], index))
            for k, call in enumerate(message.get("tool_calls") or ()):
                fn = call.get("function") or {}
                arguments = fn.get("arguments") or ""
                out.append(
                    ToolCallDelta(k, call.get("id"), fn.get("name"), arguments, choice=index)
                )
            reason = choice.get("finish_reason")
            if reason:
                out.append(Finish(FINISH_FROM_WIRE.get(reason, "stop"), index))
        if body.get("usage"):
            out.append(usage_from_wire(body["usage"]))
        return out


class _Anthropic:
    name: ProtocolName = "anthropic"
    path = "/messages"

    def headers(self, api_key: str | None) -> dict[str, str]:
        out = {"anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            out["x-api-key"] = api_key
        return out

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

    def decoder(self) -> Decoder:
        return AnthropicStreamDecoder()

    def events(self, body: Any) -> list[Event]:
        """A ``message`` body as the events of its stream."""
        if not isinstance(body, dict):
            return []
        out: list[Event] = [Start(str(body.get("id") or ""), str(body.get("model") or ""))]
        tools = 0
        for block in body.get("content") or ():
            kind = block.get("type")
            if kind == "text" and block.get("text"):
                out.append(TextDelta(block["text"]))
            elif kind == "thinking":
                out.append(ReasoningDelta(block.get("thinking") or "", block.get("signature")))
            elif kind == "redacted_thinking":
                out.append(ReasoningDelta(redacted=block.get("data")))
            elif kind == "tool_use":
                arguments = _json_encode(block.get("input") or {}).decode()
                out.append(ToolCallDelta(tools, block.get("id"), block.get("name"), arguments))
                tools += 1
        reason = body.get("stop_reason")
        if reason:
            matched = body.get("stop_sequence")
            out.append(
                Finish(
                    anthropic_wire.FINISH_FROM_WIRE.get(reason, "stop"),
                    stop_sequence=matched if isinstance(matched, str) else None,
                )
            )
        usage = body.get("usage")
        if isinstance(usage, dict):
            view = msgspec.convert(usage, anthropic_wire.UsageView)
            out.append(anthropic_wire.UsageState().update(view))
        return out


OPENAI: Wire = _OpenAI()
ANTHROPIC: Wire = _Anthropic()


def wire_for(protocol: str) -> Wire:
    """The wire named ``protocol`` (``openai`` or ``anthropic``)."""
    if protocol == "openai":
        return OPENAI
    if protocol == "anthropic":
        return ANTHROPIC
    raise ValueError(f"unknown protocol {protocol!r}: use 'openai' or 'anthropic'")
