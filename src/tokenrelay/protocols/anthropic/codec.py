"""The Anthropic Messages protocol (``POST /v1/messages``), both roles.

Client side: Anthropic clients (the official SDK's ``messages.create`` /
``messages.stream``) are served from the canon. Upstream side: Anthropic, or any
Anthropic-compatible endpoint, is called from the canon. The request codec is in
``request.py`` (wire -> canon) and ``translate.py`` (canon ->
wire, with ``ADJUSTMENTS``: what translation cannot keep); the stream codecs in
``stream.py``, over the shared vocabulary in ``wire.py``. This module is the surface a protocol module
must have (see ``base.py``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ...events import (
    ChatRequest,
    Error,
    Event,
    Finish,
    GatewayError,
    ReasoningDelta,
    Start,
    TextDelta,
    ToolCallDelta,
    kind_for_status,
)
from ...fold import Fold, Tally
from .errors import as_anthropic, as_anthropic_event
from .request import decode_count_request, decode_request
from .stream import AnthropicPassthrough, AnthropicStreamDecoder, AnthropicStreamEncoder
from .translate import ADJUSTMENTS, DEFAULT_MAX_TOKENS, EFFORT_BUDGET, encode_request
from .wire import (
    ERROR_KIND,
    FINISH_FROM_WIRE,
    UsageState,
    UsageView,
    error_object,
    name,
    new_message_id,
    stop_to_wire,
    tool_use_id,
    usage_to_wire,
)
from .wire import error_frame as _error_frame

__all__ = [
    "ADJUSTMENTS",
    "API_VERSION",
    "DEFAULT_MAX_TOKENS",
    "EFFORT_BUDGET",
    "FORWARDED_HEADERS",
    "decode_count_request",
    "decode_error",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "error_body",
    "error_frame",
    "headers",
    "model_list",
    "name",
    "passthrough",
    "stream_decoder",
    "stream_encoder",
    "url",
]

API_VERSION = "2023-06-01"
"""The ``anthropic-version`` header: the one version of the Messages API."""

FORWARDED_HEADERS: tuple[str, ...] = ("anthropic-beta",)
"""Sent on to an Anthropic upstream as the client wrote them: the beta features a
request opts into (``client.beta.messages.create(betas=[...])``) change what the API
accepts and answers. ``anthropic-version`` is the gateway's own (``API_VERSION``)."""

_json_decode = msgspec.json.decode
_json_encode = msgspec.json.Encoder().encode


# --- client side ----------------------------------------------------------------------


def stream_encoder(request: ChatRequest, model: str, tally: Tally) -> AnthropicStreamEncoder:
    """Canonical events -> a Messages stream; ``model`` is the name the client asked for."""
    return AnthropicStreamEncoder(model, tally)


def passthrough(request: ChatRequest, model: str, tally: Tally) -> AnthropicPassthrough:
    """An Anthropic upstream's frames, forwarded as written (``model`` rewritten)."""
    return AnthropicPassthrough(model, tally)


def _tool_input(arguments: str) -> dict[str, Any]:
    # The fold keeps the arguments as the upstream wrote them; a body needs an object.
    # Text that is not a JSON object (a broken upstream) cannot be one: it becomes {}.
    try:
        value: Any = _json_decode(arguments) if arguments.strip() else {}
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def encode_response(fold: Fold, model: str) -> dict[str, Any]:
    """The non-streaming ``message`` body: the fold of the stream. Blocks in the order
    Anthropic gives them: thinking (with its signature), redacted thinking, text, tool
    uses."""
    choice = fold.ordered_choices()[0]
    content: list[dict[str, Any]] = []
    if choice.reasoning or choice.reasoning_signature:
        content.append(
            {
                "type": "thinking",
                "thinking": choice.reasoning,
                "signature": choice.reasoning_signature or "",
            }
        )
    if choice.reasoning_redacted:
        content.append({"type": "redacted_thinking", "data": choice.reasoning_redacted})
    if choice.text:
        content.append({"type": "text", "text": choice.text})
    for call in choice.ordered_tool_calls():
        content.append(
            {
                "type": "tool_use",
                "id": tool_use_id(call.id),
                "name": call.name,
                "input": _tool_input(call.arguments),
            }
        )
    return {
        "id": fold.id if fold.id.startswith("msg_") else new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        **stop_to_wire(choice.finish_reason, choice.stop_sequence),
        "usage": usage_to_wire(fold.usage_or_estimate()),
    }


def error_body(error: GatewayError) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}`` with Anthropic's type names.
    An Anthropic upstream's own error body is returned as it came (its ``type``,
    ``message`` and ``request_id``: Claude Code's recovery matches on the wording); a
    context-length error of another upstream is worded as Anthropic words it
    (``errors.py``)."""
    if error.upstream is not None and error.upstream[0] == name:
        return error.upstream[1]
    error = as_anthropic(error)
    return error_object(error.kind, error.message)


def error_frame(error: Error) -> bytes:
    """The in-stream ``event: error`` frame."""
    return _error_frame(as_anthropic_event(error))


# --- upstream side --------------------------------------------------------------------


def url(base_url: str, model: str, stream: bool) -> str:
    """``base_url`` ends at the API version, like OpenAI's: ``https://api.anthropic.com/v1``."""
    return base_url.rstrip("/") + "/messages"


def headers(api_key: str | None) -> dict[str, str]:
    out = {"anthropic-version": API_VERSION}
    if api_key:
        out["x-api-key"] = api_key
    return out


def stream_decoder() -> AnthropicStreamDecoder:
    return AnthropicStreamDecoder()


def decode_error(status: int, body: bytes) -> GatewayError:
    """An upstream's error response as a ``GatewayError`` keeping its status and
    Anthropic's message; ``code`` is Anthropic's error type."""
    message = ""
    type_: str | None = None
    try:
        data = _json_decode(body)
    except msgspec.DecodeError:
        data = None
    error_ = data.get("error") if isinstance(data, dict) else None
    if isinstance(error_, dict):
        message = str(error_.get("message") or "")
        type_ = error_.get("type") if isinstance(error_.get("type"), str) else None
    elif isinstance(error_, str):
        message = error_
    if not message:
        message = (
            body[:500].decode("utf-8", "replace").strip() or f"upstream returned HTTP {status}"
        )
    kind = ERROR_KIND.get(type_ or "") or kind_for_status(status)
    error = GatewayError(kind, message, status=status, code=type_)
    if isinstance(data, dict) and data.get("type") == "error" and isinstance(error_, dict):
        error.upstream = (name, data)  # an Anthropic client gets this body as it came
    return error


def decode_response(body: Any) -> list[Event]:
    """A ``message`` body as the events of its stream (the SDK's ``create()`` folds
    them as it folds a stream)."""
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
                FINISH_FROM_WIRE.get(reason, "stop"),
                stop_sequence=matched if isinstance(matched, str) else None,
            )
        )
    usage = body.get("usage")
    if isinstance(usage, dict):
        out.append(UsageState().update(msgspec.convert(usage, UsageView)))
    return out


def model_list(models: list[tuple[str, str]]) -> dict[str, Any]:
    """``GET /v1/models`` in Anthropic's shape (``anthropic-version`` sent, or under
    ``/anthropic``): ``{"data", "has_more", "first_id", "last_id"}``."""
    data = [
        {"type": "model", "id": m, "display_name": m, "created_at": "1970-01-01T00:00:00Z"}
        for m, _ in models
    ]
    first = data[0]["id"] if data else None
    last = data[-1]["id"] if data else None
    return {"data": data, "has_more": False, "first_id": first, "last_id": last}
