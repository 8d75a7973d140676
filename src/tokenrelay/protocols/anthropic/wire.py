"""Anthropic Messages wire vocabulary shared by the codecs: stop-reason and error-type
tables, the error body, usage conversion, and the small ``msgspec`` views the stream
decoder and the passthrough read frames through.

Usage: Anthropic's ``input_tokens`` excludes cache reads and cache writes; the canon's
``input`` includes both (the OpenAI convention), so ``input = input_tokens +
cache_read_input_tokens + cache_creation_input_tokens`` and ``usage_to_wire``
subtracts them again. The counts in ``message_delta`` are cumulative: the last value of
each wins (``UsageState``).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import msgspec

from ...events import ERROR_STATUS, Error, Usage
from ...sse import encode as sse_encode
from ..base import MALFORMED as MALFORMED
from ..base import TRUNCATED as TRUNCATED

name = "anthropic"

_json_encode = msgspec.json.Encoder().encode

# stop_reason <-> canonical finish reasons. ``pause_turn`` (a server tool paused a long
# turn; the client is meant to send it back) has no canonical word and ends the turn.
FINISH_FROM_WIRE: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# A "stop" is ``end_turn`` unless the finish names its stop sequence (``stop_to_wire``;
# OpenAI and Gemini do not say which one matched); "error" travels as an error event
# and the turn is closed with ``end_turn``.
FINISH_TO_WIRE: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
}


def stop_to_wire(reason: str | None, stop_sequence: str | None) -> dict[str, Any]:
    """A message's ``stop_reason`` and ``stop_sequence`` for a canonical finish."""
    if stop_sequence is not None and reason in (None, "stop"):
        return {"stop_reason": "stop_sequence", "stop_sequence": stop_sequence}
    return {"stop_reason": FINISH_TO_WIRE.get(reason or "stop", "end_turn"), "stop_sequence": None}


# Canonical error kinds <-> Anthropic error types (docs.anthropic.com/en/api/errors,
# plus ``timeout_error`` from the SDK's ErrorType). Every kind in ERROR_STATUS is here.
ERROR_TYPE: dict[str, str] = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "request_too_large": "request_too_large",
    "rate_limit": "rate_limit_error",
    "upstream": "api_error",
    "timeout": "timeout_error",
    "overloaded": "overloaded_error",
    "server": "api_error",
}
# ``billing_error`` and unknown types take the kind of the HTTP status instead: a
# billing problem is the gateway's upstream account's, not the client's.
ERROR_KIND: dict[str, str] = {
    "invalid_request_error": "invalid_request",
    "authentication_error": "authentication",
    "permission_error": "permission",
    "not_found_error": "not_found",
    "request_too_large": "request_too_large",
    "rate_limit_error": "rate_limit",
    "timeout_error": "timeout",
    "api_error": "upstream",
    "overloaded_error": "overloaded",
}


def error_object(kind: str, message: str) -> dict[str, Any]:
    """The body of an Anthropic error: ``{"type": "error", "error": {"type", "message"}}``."""
    return {
        "type": "error",
        "error": {"type": ERROR_TYPE.get(kind, "api_error"), "message": message},
    }


def error_frame(error: Error) -> bytes:
    """``event: error``: the SDKs raise an ``APIStatusError`` built from its body."""
    return sse_encode(_json_encode(error_object(error.kind, error.message)), event="error")


def error_from_wire(type_: str, message: str) -> Error:
    """An Anthropic error type and message as a canonical ``Error`` (code = the type)."""
    kind = ERROR_KIND.get(type_, "upstream")
    return Error(kind, message or type_ or "upstream error", ERROR_STATUS[kind], type_ or None)


def usage_to_wire(usage: Usage) -> dict[str, Any]:
    """The canonical counts as Anthropic's ``usage`` object (inputs split back out; the
    ``cache_creation`` split by lifetime when there were writes)."""
    wire: dict[str, Any] = {
        "input_tokens": max(0, usage.input - usage.cached - usage.cache_write),
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cached,
        "output_tokens": usage.output,
    }
    if usage.cache_write:  # the writes by lifetime, as the API splits them
        wire["cache_creation"] = {
            "ephemeral_5m_input_tokens": usage.cache_write_5m,
            "ephemeral_1h_input_tokens": usage.cache_write_1h,
        }
    if usage.reasoning:
        wire["output_tokens_details"] = {"thinking_tokens": usage.reasoning}
    return wire


_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def new_message_id() -> str:
    return f"msg_{secrets.token_hex(12)}"


def tool_use_id(upstream_id: str | None) -> str:
    """A tool call id as Anthropic writes them (``toolu_…``): an id of another upstream
    (``call_…``, Gemini's none) gets the prefix, its own characters kept where they are
    ones Anthropic allows (``[A-Za-z0-9_-]``), so the client sends back a valid id and
    the translated upstream can still match the result to its call."""
    if not upstream_id:
        return f"toolu_{secrets.token_hex(12)}"
    if upstream_id.startswith("toolu_"):
        return upstream_id
    return "toolu_" + _ID_UNSAFE.sub("_", upstream_id)


# --- views: the few fields the gateway reads, decoded without building dicts --------


class OutputDetailsView(msgspec.Struct):
    thinking_tokens: int | None = None


class CacheCreationView(msgspec.Struct):
    ephemeral_5m_input_tokens: int | None = None
    ephemeral_1h_input_tokens: int | None = None


class UsageView(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_creation: CacheCreationView | None = None
    output_tokens_details: OutputDetailsView | None = None


class MessageView(msgspec.Struct):
    id: str = ""
    model: str = ""
    usage: UsageView | None = None


class BlockView(msgspec.Struct):
    type: str = ""
    id: str | None = None
    name: str | None = None
    text: str | None = None
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


class DeltaView(msgspec.Struct):
    type: str | None = None
    text: str | None = None
    thinking: str | None = None
    signature: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None
    stop_sequence: str | None = None


class ErrorView(msgspec.Struct):
    type: str = ""
    message: str = ""


class FrameView(msgspec.Struct):
    type: str = ""
    index: int = 0
    message: MessageView | None = None
    content_block: BlockView | None = None
    delta: DeltaView | None = None
    usage: UsageView | None = None
    error: ErrorView | None = None


view = msgspec.json.Decoder(FrameView).decode


class UsageState:
    """Cumulative Anthropic counts: message_start gives the input side, message_delta
    repeats (newer API) or omits (older API) it; each field keeps its last value."""

    __slots__ = ("cache_read", "cache_write", "cache_write_1h", "input", "output", "thinking")

    def __init__(self) -> None:
        self.input = self.output = self.cache_read = self.cache_write = self.thinking = 0
        self.cache_write_1h = 0

    def update(self, u: UsageView, partial: bool = False) -> Usage:
        """The counts so far; ``partial`` for ``message_start``'s (the answer is yet to
        come: its ``output_tokens`` is a placeholder)."""
        if u.input_tokens is not None:
            self.input = u.input_tokens
        if u.output_tokens is not None:
            self.output = u.output_tokens
        if u.cache_read_input_tokens is not None:
            self.cache_read = u.cache_read_input_tokens
        if u.cache_creation_input_tokens is not None:
            self.cache_write = u.cache_creation_input_tokens
        split = u.cache_creation
        if split is not None:
            # the split by lifetime; its sum is the total when the total is missing
            short = split.ephemeral_5m_input_tokens or 0
            self.cache_write_1h = split.ephemeral_1h_input_tokens or 0
            if u.cache_creation_input_tokens is None:
                self.cache_write = short + self.cache_write_1h
        details = u.output_tokens_details
        if details is not None and details.thinking_tokens is not None:
            self.thinking = details.thinking_tokens
        return Usage(
            input=self.input + self.cache_read + self.cache_write,
            output=self.output,
            cached=self.cache_read,
            reasoning=self.thinking,
            cache_write=self.cache_write,
            cache_write_1h=min(self.cache_write_1h, self.cache_write),
            partial=partial,
        )
