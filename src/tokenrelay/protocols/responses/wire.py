"""The OpenAI Responses wire vocabulary shared by its codecs: ids, the ``response``
envelope, status and usage tables, the error shapes.

Wire reference: the official ``openai`` SDK's ``types/responses/`` (``Response``,
``ResponseStreamEvent``, ``ResponseUsage``) and ``lib/streaming/responses/``, whose
accumulator (``ResponseStreamState``) is what ``responses.stream()`` clients run over
our bytes, checked against the recordings in ``../shared/fixtures/streams/openai/``.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ...events import ERROR_STATUS, ChatRequest, Error, Usage
from ...ids import token_hex
from ...sse import encode as sse_encode
from ..openai.stream import error_object

name = "openai-responses"

json_encode = msgspec.json.Encoder().encode
json_decode = msgspec.json.decode

FINAL = "responses.final"
"""``Start.extra`` key of a Responses upstream's final ``response`` object: the decoder
gives it with the terminal event, so a non-streaming answer to a Responses client on a
Responses upstream is that object (built-in tool items, annotations and all), not a
rebuild from the canon."""

ENCRYPTED = "reasoning.encrypted_content"
"""The ``include`` entry that asks for reasoning items' ``encrypted_content``."""

MALFORMED = Error("upstream", "the upstream sent a malformed frame", 502, "upstream_malformed")
TRUNCATED = Error(
    "upstream", "the upstream closed the stream before it finished", 502, "upstream_truncated"
)


def new_id(prefix: str) -> str:
    """``resp_``, ``msg_``, ``rs_``, ``fc_`` ids: 48 hex digits, as OpenAI's are long."""
    return f"{prefix}_{token_hex(24)}"


# --- status <-> canonical finish reasons ------------------------------------------------

INCOMPLETE_REASON: dict[str, str] = {
    "length": "max_output_tokens",
    "content_filter": "content_filter",
}
"""Canonical finish reasons that end a response ``incomplete``, and the reason given in
``incomplete_details``; every other reason ends it ``completed`` (tool calls too: the
Responses API says so by the ``function_call`` items, not by a status)."""

FINISH_FROM_INCOMPLETE: dict[str, str] = {v: k for k, v in INCOMPLETE_REASON.items()}


def status_of(reason: str | None) -> tuple[str, dict[str, str] | None]:
    """(``status``, ``incomplete_details``) for a canonical finish reason."""
    why = INCOMPLETE_REASON.get(reason or "stop")
    return ("incomplete", {"reason": why}) if why else ("completed", None)


# --- usage ------------------------------------------------------------------------------


def usage_to_wire(usage: Usage) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "input_tokens": usage.input,
        "input_tokens_details": {
            "cached_tokens": usage.cached,
            "cache_write_tokens": usage.cache_write,
        },
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.input + usage.output,
    }
    if usage.estimated:
        wire["estimated"] = True  # the upstream gave no counts: see fold.estimate_usage
    return wire


def usage_from_wire(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    inputs = raw.get("input_tokens_details") or {}
    outputs = raw.get("output_tokens_details") or {}
    return Usage(
        input=int(raw.get("input_tokens") or 0),
        output=int(raw.get("output_tokens") or 0),
        cached=int(inputs.get("cached_tokens") or 0),
        reasoning=int(outputs.get("reasoning_tokens") or 0),
        cache_write=int(inputs.get("cache_write_tokens") or 0),
    )


# --- the response envelope --------------------------------------------------------------

_ECHOED = (
    "instructions",
    "max_output_tokens",
    "metadata",
    "parallel_tool_calls",
    "previous_response_id",
    "reasoning",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "truncation",
    "user",
)
_DEFAULTS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
}


def echoed(request: ChatRequest | None) -> dict[str, Any]:
    """The request fields a ``response`` object repeats, from the client's body when it
    was a Responses request (its defaults otherwise)."""
    body = request.source.body if request is not None and request.source is not None else {}
    own = request is not None and request.source is not None and request.source.protocol == name
    echo = {k: (body.get(k, v) if own else v) for k, v in _DEFAULTS.items() if k in _ECHOED}
    echo.update(store=False, background=False)
    echo.update(state_echo(request))
    return echo


def state_echo(request: ChatRequest | None) -> dict[str, Any]:
    """The state fields of a ``response`` object, which the gateway owns (``state.py``):
    kept unless the client said ``store: false`` (the default is true), the response it
    continues, background mode (run by the gateway, ``server/background.py``). A
    Responses upstream's own values (it is called with ``store: false``, in the
    foreground) are replaced by these. None for a request in another protocol."""
    source = request.source if request is not None else None
    if source is None or source.protocol != name:
        return {}
    body = source.body
    previous = body.get("previous_response_id")
    return {
        "previous_response_id": previous if isinstance(previous, str) else None,
        "store": body.get("store", True) is not False,
        "background": body.get("background") is True,
    }


class Envelope:
    """The constant part of one response's ``response`` objects."""

    __slots__ = ("created_at", "echo", "id", "model")

    def __init__(self, model: str, request: ChatRequest | None, id: str | None = None) -> None:
        self.id = id or new_id("resp")
        self.created_at = int(time.time())
        self.model = model
        self.echo = echoed(request)

    def response(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: Usage | None = None,
        incomplete: dict[str, str] | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": error,
            "incomplete_details": incomplete,
            "model": self.model,
            "output": output,
            **self.echo,
            "usage": usage_to_wire(usage) if usage is not None else None,
        }


# --- errors -----------------------------------------------------------------------------


def error_body(kind: str, message: str, code: str | None, param: str | None) -> dict[str, Any]:
    """An HTTP error body: the OpenAI shape, ``{"error": {message, type, param, code}}``."""
    return {"error": error_object(kind, message, code, param)}


def error_event(error: Error, sequence: int) -> bytes:
    """The in-stream ``error`` event (``ResponseErrorEvent``)."""
    data = {
        "type": "error",
        "code": error.code or error_object(error.kind, "", None, None)["type"],
        "message": error.message,
        "param": error.param,
        "sequence_number": sequence,
    }
    return sse_encode(json_encode(data), event="error")


def frame(kind: str, data: bytes) -> bytes:
    """One event: ``event: <type>`` and its JSON data (whose ``type`` says the same)."""
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


_KIND_OF_CODE = {
    "rate_limit_exceeded": "rate_limit",
    "server_error": "upstream",
    "invalid_prompt": "invalid_request",
    "context_length_exceeded": "invalid_request",
    "invalid_request_error": "invalid_request",
}


def error_from_wire(raw: Any) -> Error:
    """An ``error`` event's data, or a failed response's ``error``, as canonical."""
    if not isinstance(raw, dict):
        return Error("upstream", str(raw), 502)
    message = str(raw.get("message") or "upstream error")
    code = raw.get("code")
    kind = _KIND_OF_CODE.get(str(code), "upstream")
    status = ERROR_STATUS.get(kind, 502) if kind != "upstream" else 502
    return Error(kind, message, status, str(code) if code is not None else None, raw.get("param"))
