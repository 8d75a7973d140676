"""OpenAI Chat Completions as an upstream: a canonical request as the wire body, and
the table of what this wire cannot carry (dropped or adjusted on purpose)."""

from __future__ import annotations

from typing import Any

from ...events import ChatRequest, ImagePart, Message, TextPart, ToolCallPart, ToolResultPart
from ..cache_hints import OPENAI_FIELDS

name = "openai"


def _wire_content(parts: list[Any]) -> str | list[dict[str, Any]]:
    if all(isinstance(p, TextPart) for p in parts):
        return "".join(p.text for p in parts)
    out: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, TextPart):
            out.append({"type": "text", "text": p.text})
        elif isinstance(p, ImagePart):
            url = p.url or f"data:{p.media_type or 'image/png'};base64,{p.data}"
            image: dict[str, Any] = {"url": url}
            if p.detail:
                image["detail"] = p.detail
            out.append({"type": "image_url", "image_url": image})
    return out


def wire_call(id: str, name: str, arguments: str, signature: str | None) -> dict[str, Any]:
    call: dict[str, Any] = {
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    if signature:
        call["extra_content"] = {"google": {"thought_signature": signature}}
    return call


def _wire_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            for p in m.parts:
                if isinstance(p, ToolResultPart):
                    out.append(
                        {
                            "role": "tool",
                            "tool_call_id": p.tool_call_id,
                            "content": _wire_content(p.content),
                        }
                    )
            continue
        wire: dict[str, Any] = {"role": m.role}
        if m.name:
            wire["name"] = m.name
        if m.role == "assistant":
            text = [p for p in m.parts if isinstance(p, TextPart)]
            calls = [p for p in m.parts if isinstance(p, ToolCallPart)]
            wire["content"] = "".join(p.text for p in text) if text or not calls else None
            if calls:
                wire["tool_calls"] = [
                    wire_call(c.id, c.name, c.arguments, c.signature) for c in calls
                ]
        else:
            wire["content"] = _wire_content(
                [p for p in m.parts if isinstance(p, TextPart | ImagePart)]
            )
        out.append(wire)
    return out


def effort_for_budget(budget: int) -> str:
    """A thinking budget in tokens as OpenAI's ``reasoning_effort`` (see DROPPED)."""
    return "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"


# What the OpenAI wire cannot carry, dropped or adjusted on purpose when a canonical
# request goes to an OpenAI-compatible upstream (a request that arrived in this protocol
# is forwarded as the client wrote it). (field, what happens, why)
DROPPED: tuple[tuple[str, str, str], ...] = (
    (
        "ReasoningPart in history",
        "not sent (text, signature, redacted)",
        "Chat Completions takes no reasoning input; OpenAI rejects unknown message fields",
    ),
    (
        "reasoning_budget",
        "sent as reasoning_effort: <=2048 low, <=8192 medium, else high",
        "OpenAI sets reasoning by effort, not by a token budget",
    ),
    (
        "TextPart.cache (cache_control hints)",
        "dropped",
        "this provider caches every prompt by itself, with no per-part hint",
    ),
    ("ToolResultPart.is_error", "dropped", "a tool message has no error flag"),
    ("ToolResultPart.name", "dropped", "tool messages are matched by tool_call_id"),
    ("Tool.strict None", "omitted", "the upstream's default applies"),
    (
        "ImagePart in system or tool messages",
        "sent as image_url parts",
        "some servers accept images only in user messages and answer 400",
    ),
    (
        "ToolCallPart.signature",
        "sent as extra_content.google.thought_signature",
        "the shape Google's OpenAI-compatible API takes back; others ignore or refuse it",
    ),
    ("extra (fields of another protocol)", "dropped", "they mean nothing on this wire"),
)


def encode_request(request: ChatRequest, model: str) -> dict[str, Any]:
    """The body to send an OpenAI-compatible upstream. Always streamed, always asking
    for usage: the gateway bills from the upstream's counts. A request that arrived in
    this protocol is forwarded as the client wrote it, model and stream patched."""
    source = request.source
    if source is not None and source.protocol == name:
        body = dict(source.body)
    else:
        body = {"messages": _wire_messages(request.messages)}
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.reasoning_effort is None and request.reasoning_budget:
            body["reasoning_effort"] = effort_for_budget(request.reasoning_budget)
        for key in (
            "temperature",
            "top_p",
            "stop",
            "seed",
            "n",
            "parallel_tool_calls",
            "response_format",
            "reasoning_effort",
            "user",
            *OPENAI_FIELDS,
        ):
            value = getattr(request, key)
            if value is not None:
                body[key] = value
        if request.tools is not None:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        k: v
                        for k, v in (
                            ("name", t.name),
                            ("description", t.description),
                            ("parameters", t.parameters),
                            ("strict", t.strict),
                        )
                        if v is not None
                    },
                }
                for t in request.tools
            ]
        if request.tool_choice is not None:
            choice = request.tool_choice
            body["tool_choice"] = (
                choice
                if choice in ("auto", "none", "required")
                else {"type": "function", "function": {"name": choice}}
            )
    body["model"] = model
    body["stream"] = True
    options = dict(body.get("stream_options") or {})
    options["include_usage"] = True
    body["stream_options"] = options
    return body
