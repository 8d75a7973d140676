"""The canonical model: one request type and one closed set of stream events.

Every layer of tokenrelay speaks only these types to the next one. A protocol codec
turns its wire format into them and back; nothing else knows a wire format.

The types are ``msgspec.Struct``s: cheap to build on the per-chunk path, and
serialisable as they are (a tagged union) for resume buffers kept outside the process.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

# --- finish reasons -------------------------------------------------------------------

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]
"""Canonical finish reasons; every protocol maps them to its own words by a table."""

FINISH_REASONS: tuple[str, ...] = ("stop", "length", "tool_calls", "content_filter", "error")


# --- the request ----------------------------------------------------------------------


class TextPart(msgspec.Struct, tag="text", omit_defaults=True):
    """Text. ``cache``: a prompt-cache breakpoint the client set after it, ``"5m"`` or
    ``"1h"`` (``protocols/cache_hints.py``)."""

    text: str
    cache: str | None = None


class ImagePart(msgspec.Struct, tag="image", omit_defaults=True):
    """An image given by URL or by base64 data with its media type."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    detail: str | None = None


class ToolCallPart(msgspec.Struct, tag="tool_call", omit_defaults=True):
    """A call the assistant made; ``arguments`` is the JSON text as the model wrote it."""

    id: str
    name: str
    arguments: str = ""
    signature: str | None = None  # opaque provider data (Gemini thought signature)


class ToolResultPart(msgspec.Struct, tag="tool_result", omit_defaults=True):
    tool_call_id: str
    content: list[TextPart | ImagePart] = []
    is_error: bool = False
    name: str | None = None


class ReasoningPart(msgspec.Struct, tag="reasoning", omit_defaults=True):
    """Reasoning the assistant produced; ``signature``/``redacted`` are opaque and must
    come back unchanged on the next turn."""

    text: str = ""
    signature: str | None = None
    redacted: str | None = None


Part = TextPart | ImagePart | ToolCallPart | ToolResultPart | ReasoningPart

Role = Literal["system", "user", "assistant", "tool"]


class Message(msgspec.Struct, omit_defaults=True):
    """One turn. ``tool`` messages hold ``ToolResultPart``s; ``assistant`` messages may
    hold text, reasoning and tool calls; ``system`` and ``user`` hold text and images."""

    role: Role
    parts: list[Part] = []
    name: str | None = None


class Tool(msgspec.Struct, omit_defaults=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] = {}
    strict: bool | None = None


class Source(msgspec.Struct):
    """The request as the client sent it, in the client's own protocol. An upstream that
    speaks the same protocol is sent this body (model and stream fields patched), and
    ``headers``, the protocol's own request headers the client sent (``anthropic-beta``:
    each protocol's ``FORWARDED_HEADERS``), so nothing the client said is lost in a
    same-protocol relay.

    ``untranslatable`` is what kept the body from being read into the canon (message,
    param): the same-protocol upstream judges such a body itself, every other upstream
    (translation needs the canon) gets it as the client's 400 instead."""

    protocol: str
    body: dict[str, Any]
    headers: dict[str, str] = {}
    untranslatable: tuple[str, str | None] | None = None
    array: bool = False  # Gemini without alt=sse: the stream as one JSON array, not SSE

    def check_translatable(self) -> None:
        """Raise the 400 the body earned, for an upstream of another protocol."""
        if self.untranslatable is not None:
            message, param = self.untranslatable
            raise GatewayError("invalid_request", message, param=param)


class ChatRequest(msgspec.Struct, omit_defaults=True):
    """The canonical request. ``extra`` carries wire fields the canon has no slot for;
    they reach an upstream that speaks the same protocol unchanged.

    ``tool_choice`` is ``"auto"``, ``"none"``, ``"required"`` or a tool name.
    ``reasoning_effort`` is ``"low"|"medium"|"high"``; ``reasoning_budget`` a token
    budget. Either may be set; codecs translate between them.
    """

    model: str
    messages: list[Message]
    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    n: int | None = None
    tools: list[Tool] | None = None
    tool_choice: str | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    reasoning_budget: int | None = None
    include_usage: bool = False
    user: str | None = None
    prompt_cache_key: str | None = None  # OpenAI's cache-routing hint (affinity too)
    prompt_cache_retention: str | None = None  # OpenAI's "in_memory" | "24h"
    extra: dict[str, Any] = {}
    source: Source | None = None

    def has_images(self) -> bool:
        return any(
            isinstance(p, ImagePart)
            or (isinstance(p, ToolResultPart) and any(isinstance(c, ImagePart) for c in p.content))
            for m in self.messages
            for p in m.parts
        )

    def last_user_text(self) -> str:
        """The text of the last user message ('' if there is none)."""
        for message in reversed(self.messages):
            if message.role == "user":
                return "".join(p.text for p in message.parts if isinstance(p, TextPart))
        return ""


# --- the stream -----------------------------------------------------------------------


class Start(msgspec.Struct, tag="start", omit_defaults=True):
    """The stream has begun. ``extra`` keeps upstream fields worth echoing
    (e.g. ``system_fingerprint``)."""

    id: str
    model: str
    created: int = 0
    role: str = "assistant"
    extra: dict[str, Any] = {}


class TextDelta(msgspec.Struct, tag="text", omit_defaults=True):
    text: str
    choice: int = 0


class ReasoningDelta(msgspec.Struct, tag="reasoning", omit_defaults=True):
    """A piece of reasoning text, or of its opaque signature / redacted payload."""

    text: str = ""
    signature: str | None = None
    redacted: str | None = None
    choice: int = 0


class ToolCallDelta(msgspec.Struct, tag="tool_call", omit_defaults=True):
    """A fragment of tool call ``index``. ``id`` and ``name`` come with the first
    fragment of a call; ``arguments`` fragments concatenate to the JSON text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    signature: str | None = None
    choice: int = 0


class Finish(msgspec.Struct, tag="finish", omit_defaults=True):
    """The end of a choice. ``stop_sequence`` is the request's stop sequence that ended
    it (reason ``"stop"``), when the upstream says which one (Anthropic does)."""

    reason: str
    choice: int = 0
    stop_sequence: str | None = None


class Usage(msgspec.Struct, tag="usage", omit_defaults=True):
    """Token counts as the upstream reported them, in one convention for every protocol
    (OpenAI's): ``input`` is the whole prompt, so it *includes* the cache reads
    (``cached``) and the cache writes (``cache_write``); the plain, uncached input is
    ``input - cached - cache_write``. Anthropic reports the three apart
    (``input_tokens``, ``cache_read_input_tokens``, ``cache_creation_input_tokens``):
    its codec adds them up on the way in and splits them back out on the way out, so a
    cached token is counted once, never twice and never as zero.

    ``cache_write`` counts every cache write, whatever its lifetime; ``cache_write_1h``
    is the part of it written for one hour (Anthropic's ``ttl: "1h"``, from
    ``cache_creation.ephemeral_1h_input_tokens``), billed at its own rate: the
    5-minute writes are ``cache_write - cache_write_1h``.

    ``output`` includes reasoning tokens (the OpenAI convention). ``partial``: counts
    the upstream gave before its answer was whole (Anthropic's ``message_start``,
    Gemini's running totals), to be completed by its final ones or, if those never
    come, by an estimate (``fold.charged_usage``)."""

    input: int = 0
    output: int = 0
    cached: int = 0
    reasoning: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0
    estimated: bool = False
    partial: bool = False

    @property
    def cache_write_5m(self) -> int:
        """The cache writes that live five minutes (every write that is not 1-hour)."""
        return max(0, self.cache_write - self.cache_write_1h)


class Error(msgspec.Struct, tag="error", omit_defaults=True):
    """A failure. ``kind`` is one of the canonical error kinds below."""

    kind: str
    message: str
    status: int = 500
    code: str | None = None
    param: str | None = None


Event = Start | TextDelta | ReasoningDelta | ToolCallDelta | Finish | Usage | Error

# Canonical error kinds and the HTTP status each defaults to.
ERROR_STATUS: dict[str, int] = {
    "invalid_request": 400,
    "authentication": 401,
    "permission": 403,
    "not_found": 404,
    "gone": 410,
    "request_too_large": 413,
    "rate_limit": 429,
    "upstream": 502,
    "timeout": 504,
    "overloaded": 529,
    "server": 500,
}


class GatewayError(Exception):
    """An error to report to the client in its own protocol's shape."""

    def __init__(
        self,
        kind: str,
        message: str,
        status: int | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status if status is not None else ERROR_STATUS.get(kind, 500)
        self.code = code
        self.param = param
        self.headers = headers or {}
        # (protocol, body) of an upstream's error response, for a client of the same
        # protocol to get it verbatim; None when it may hold a secret or was not JSON
        self.upstream: tuple[str, dict[str, Any]] | None = None

    def event(self) -> Error:
        return Error(self.kind, self.message, self.status, self.code, self.param)

    @classmethod
    def from_event(cls, error: Error) -> GatewayError:
        return cls(error.kind, error.message, error.status, error.code, error.param)


def kind_for_status(status: int) -> str:
    """The canonical error kind for an upstream HTTP status."""
    if status == 400 or status == 422:
        return "invalid_request"
    if status == 401:
        return "authentication"
    if status == 403:
        return "permission"
    if status == 404:
        return "not_found"
    if status == 408:
        return "timeout"
    if status == 413:
        return "request_too_large"
    if status == 429:
        return "rate_limit"
    if status == 529:
        return "overloaded"
    return "upstream"


def too_deep() -> GatewayError:
    """A request nested too deeply to decode or translate (a 400, never retried)."""
    return GatewayError(
        "invalid_request", "The request body is nested too deeply.", code="nested_too_deeply"
    )
