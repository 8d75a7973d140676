"""Three of the wire formats the fake upstream speaks (the Responses one is in
``responses_wire.py``): synthetic streams, non-streaming
bodies, error bodies and in-band error events, plus what it reads from a request.

A stream is built as a list of whole SSE events (bytes, one per write). Text chunks are
given as a list of strings; usage counts one token per chunk and one per prompt word.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from .cache_counts import NO_CACHE, CacheCounts, anthropic_input, gemini_usage, openai_usage

__all__ = [
    "Proto",
    "anthropic_body",
    "anthropic_stream",
    "error_body",
    "gemini_body",
    "gemini_stream",
    "inband_error",
    "last_user_text",
    "openai_body",
    "openai_stream",
    "prompt_tokens",
    "split_words",
]

Proto = Literal["openai", "anthropic", "gemini", "responses"]

_encode = msgspec.json.Encoder().encode
_WORD = re.compile(r"\S+\s*")
_ANY_WORD = re.compile(r"\S+")


# --- reading requests -------------------------------------------------------------------


def _texts(content: Any) -> list[str]:
    """Text strings in an OpenAI/Anthropic ``content`` or a Gemini ``parts`` list."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    out.append(text)
                elif "content" in part:  # Anthropic tool_result blocks nest content
                    out.extend(_texts(part["content"]))
    return out


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _turns(proto: Proto, body: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(role, texts) for every turn of the request, system prompt included."""
    turns: list[tuple[str, list[str]]] = []
    if proto == "gemini":
        system = body.get("systemInstruction") or body.get("system_instruction")
        if isinstance(system, dict):
            turns.append(("system", _texts(system.get("parts"))))
        for content in _list(body.get("contents")):
            if isinstance(content, dict):
                turns.append((str(content.get("role", "user")), _texts(content.get("parts"))))
        return turns
    if proto == "responses":
        return _responses_turns(body)
    if proto == "anthropic" and "system" in body:
        turns.append(("system", _texts(body["system"])))
    for message in _list(body.get("messages")):
        if isinstance(message, dict):
            turns.append((str(message.get("role", "")), _texts(message.get("content"))))
    return turns


def _responses_turns(body: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """A Responses body's turns: ``instructions``, then ``input`` (a string, or items:
    messages, ``function_call_output`` items as tool turns; other items carry no text)."""
    turns: list[tuple[str, list[str]]] = []
    if isinstance(body.get("instructions"), str):
        turns.append(("system", [body["instructions"]]))
    items = body.get("input")
    if isinstance(items, str):
        return [*turns, ("user", [items])]
    for item in _list(items):
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message":
            role = str(item.get("role", ""))
            turns.append(("system" if role == "developer" else role, _texts(item.get("content"))))
        elif kind == "function_call_output":
            turns.append(("tool", _texts(item.get("output"))))
    return turns


def turns(proto: Proto, body: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(role, texts) for every turn of the request, system prompt included."""
    return _turns(proto, body)


def words(text: str) -> int:
    """The fake tokenizer's count for ``text``: one token per whitespace-separated word."""
    return len(_ANY_WORD.findall(text))


def last_user_text(proto: Proto, body: dict[str, Any]) -> str:
    """The text of the last user turn ('' if there is none)."""
    for role, texts in reversed(_turns(proto, body)):
        if role == "user":
            return "".join(texts)
    return ""


def prompt_tokens(proto: Proto, body: dict[str, Any]) -> int:
    """The fake tokenizer: one token per whitespace-separated word of every turn, at
    least 1."""
    words = sum(len(_ANY_WORD.findall(t)) for _, texts in _turns(proto, body) for t in texts)
    return max(words, 1)


def split_words(text: str) -> list[str]:
    """Split into word-plus-trailing-space pieces whose concatenation is ``text``."""
    pieces = _WORD.findall(text)
    lead = len(text) - len(text.lstrip())
    if pieces and lead:
        pieces[0] = text[:lead] + pieces[0]
    elif not pieces and text:
        pieces = [text]
    return pieces


# --- OpenAI Chat Completions ---------------------------------------------------------------


def openai_stream(
    texts: Sequence[str],
    *,
    ident: str,
    created: int,
    model: str,
    prompt: int,
    include_usage: bool,
    no_done: bool,
    counts: bool = True,
    cache: CacheCounts = NO_CACHE,
) -> list[bytes]:
    """Role chunk, one chunk per text, finish chunk, usage chunk (if asked and
    ``counts``), ``[DONE]``."""

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        obj: dict[str, Any] = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [choice],
        }
        if include_usage:
            obj["usage"] = None
        return b"data: " + _encode(obj) + b"\n\n"

    events = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
    events.extend(chunk({"content": text}, None) for text in texts)
    events.append(chunk({}, "stop"))
    if include_usage and counts:
        events.append(
            openai_usage_chunk(ident, created, model, openai_usage(prompt, len(texts), cache))
        )
    if not no_done:
        events.append(b"data: [DONE]\n\n")
    return events


def openai_usage_chunk(ident: str, created: int, model: str, usage: dict[str, Any]) -> bytes:
    """The last chunk of a stream that asked for usage: empty ``choices`` and the counts."""
    obj = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [],
        "usage": usage,
    }
    return b"data: " + _encode(obj) + b"\n\n"


def openai_body(
    text: bytes,
    *,
    ident: str,
    created: int,
    model: str,
    prompt: int,
    output: int,
    finish: str = "stop",
    cache: CacheCounts = NO_CACHE,
) -> bytes:
    """A ``chat.completion`` body; ``text`` is the already JSON-encoded content string."""
    head = {"id": ident, "object": "chat.completion", "created": created, "model": model}
    tail = {
        "usage": openai_usage(prompt, output, cache),
        "system_fingerprint": "fp_fake",
    }
    return (
        _encode(head)[:-1]
        + b',"choices":[{"index":0,"message":{"role":"assistant","content":'
        + text
        + b',"refusal":null},"logprobs":null,"finish_reason":'
        + _encode(finish)
        + b"}],"
        + _encode(tail)[1:]
    )


# --- Anthropic Messages ----------------------------------------------------------------------


def _named(event: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + _encode(obj) + b"\n\n"


def anthropic_stream(
    texts: Sequence[str],
    *,
    ident: str,
    model: str,
    prompt: int,
    no_done: bool,
    counts: bool = True,
    cache: CacheCounts = NO_CACHE,
) -> list[bytes]:
    """``message_start``, a text block with one delta per text, ``message_delta`` with the
    stop reason and usage, ``message_stop`` (no ``usage`` anywhere without ``counts``)."""
    message: dict[str, Any] = {
        "id": ident,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**anthropic_input(prompt, cache), "output_tokens": 1},
    }
    if not counts:
        del message["usage"]
    final: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
    }
    if counts:
        final["usage"] = {"output_tokens": len(texts)}
    events = [
        _named("message_start", {"type": "message_start", "message": message}),
        _named(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        _named("ping", {"type": "ping"}),
    ]
    events.extend(
        _named(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
        )
        for t in texts
    )
    events.append(_named("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(_named("message_delta", final))
    if not no_done:
        events.append(_named("message_stop", {"type": "message_stop"}))
    return events


def anthropic_body(
    text: bytes,
    *,
    ident: str,
    model: str,
    prompt: int,
    output: int,
    finish: str = "stop",
    stop_sequence: str | None = None,
    cache: CacheCounts = NO_CACHE,
) -> bytes:
    """A ``message`` body; ``text`` is the already JSON-encoded text string; ``finish``
    is ``stop`` or ``length``; ``stop_sequence`` the stop sequence that ended it."""
    head = {"id": ident, "type": "message", "role": "assistant", "model": model}
    reason = "max_tokens" if finish == "length" else "end_turn"
    tail = {
        "stop_reason": "stop_sequence" if stop_sequence else reason,
        "stop_sequence": stop_sequence,
        "usage": {**anthropic_input(prompt, cache), "output_tokens": output},
    }
    return (
        _encode(head)[:-1]
        + b',"content":[{"type":"text","text":'
        + text
        + b"}],"
        + _encode(tail)[1:]
    )


# --- Gemini generateContent ------------------------------------------------------------------


def _gemini_chunk(
    text: str, finish: bool, usage: dict[str, int] | None, model: str, ident: str
) -> bytes:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
    if finish:
        candidate["finishReason"] = "STOP"
    candidate["index"] = 0
    obj: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        obj["usageMetadata"] = usage
    obj.update(modelVersion=model, responseId=ident)
    return b"data: " + _encode(obj) + b"\r\n\r\n"


def gemini_stream(
    texts: Sequence[str],
    *,
    ident: str,
    model: str,
    prompt: int,
    no_done: bool,
    counts: bool = True,
    cache: CacheCounts = NO_CACHE,
) -> list[bytes]:
    """One chunk per text (CRLF line endings, as Gemini sends them); the last chunk
    carries ``finishReason`` and the full ``usageMetadata`` (none without ``counts``).
    No terminator event."""
    partial = {"promptTokenCount": prompt, "totalTokenCount": prompt}
    pieces = list(texts) or [""]
    last = len(pieces) - 1
    return [
        _gemini_chunk(
            text,
            i == last and not no_done,
            None
            if not counts
            else gemini_usage(prompt, len(texts), cache)
            if i == last
            else partial,
            model,
            ident,
        )
        for i, text in enumerate(pieces)
    ]


def gemini_body(
    text: bytes,
    *,
    ident: str,
    model: str,
    prompt: int,
    output: int,
    finish: str = "stop",
    cache: CacheCounts = NO_CACHE,
) -> bytes:
    """A ``GenerateContentResponse``; ``text`` is the already JSON-encoded text string;
    ``finish`` is ``stop`` or ``length``."""
    tail = {
        "usageMetadata": gemini_usage(prompt, output, cache),
        "modelVersion": model,
        "responseId": ident,
    }
    return (
        b'{"candidates":[{"content":{"parts":[{"text":'
        + text
        + b'}],"role":"model"},"finishReason":'
        + (b'"MAX_TOKENS"' if finish == "length" else b'"STOP"')
        + b',"index":0}],'
        + _encode(tail)[1:]
    )


# --- errors ------------------------------------------------------------------------------------

_OPENAI_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_object(proto: Proto, status: int, message: str) -> dict[str, Any]:
    """The error body each provider sends with an HTTP error status."""
    if proto == "anthropic":
        kind = _ANTHROPIC_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        return {"type": "error", "error": {"type": kind, "message": message}}
    if proto == "gemini":
        name = _GEMINI_STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        return {"error": {"code": status, "message": message, "status": name}}
    default = ("server_error", None) if status >= 500 else ("invalid_request_error", None)
    kind, code = _OPENAI_TYPES.get(status, default)
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def error_body(proto: Proto, status: int, message: str) -> bytes:
    """``error_object`` as JSON bytes."""
    return _encode(error_object(proto, status, message))


def inband_error(proto: Proto) -> bytes:
    """An error event in the middle of a 200 stream, as each provider sends one."""
    if proto == "anthropic":
        return _named(
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )
    if proto == "gemini":
        body = error_body(proto, 503, "The model is overloaded. Please try again later.")
        return b"data: " + body + b"\r\n\r\n"
    if proto == "responses":
        return _named(
            "error",
            {
                "type": "error",
                "code": "server_error",
                "message": "The server had an error (fake in-band).",
                "param": None,
            },
        )
    return b"data: " + error_body(proto, 500, "The server had an error (fake in-band).") + b"\n\n"


def encode_json(value: Any) -> bytes:
    """JSON bytes (the one encoder of this package)."""
    return _encode(value)
