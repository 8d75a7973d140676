"""A Responses request (``POST /v1/responses``) -> ``ChatRequest``.

``input`` is a string (one user message) or a list of items: messages (roles ``user``,
``assistant``, ``system``, ``developer``; content a string or ``input_text`` /
``input_image`` / ``output_text`` / ``refusal`` parts), ``function_call`` and
``function_call_output`` items, ``reasoning`` items (their summary as reasoning text,
their ``encrypted_content`` as its signature). ``instructions`` is the first system
message. Consecutive assistant-side items (reasoning, message, calls) make one
assistant turn, consecutive outputs one tool turn. What the canon has no slot for
(built-in tools and their items, other content parts) is left out of the canon (see
``DROPPED``); a Responses upstream gets the body as the client wrote it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...events import (
    ChatRequest,
    GatewayError,
    ImagePart,
    Message,
    Part,
    ReasoningPart,
    Source,
    TextPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
)
from ..cache_hints import hint_of, text_field
from .wire import json_encode, name

_KNOWN = frozenset(
    {
        "model",
        "input",
        "instructions",
        "stream",
        "max_output_tokens",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "reasoning",
        "user",
    }
)

CUSTOM_INPUT = "input"
"""A custom (free-form) tool becomes a function tool taking one string, this one."""


def _invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError("invalid_request", message, code="invalid_value", param=param)


def _image(part: dict[str, Any], where: str) -> ImagePart | None:
    url = part.get("image_url")
    if not isinstance(url, str):
        return None  # a file_id image: only a Responses upstream can resolve it (DROPPED)
    detail = part.get("detail") if isinstance(part.get("detail"), str) else None
    if detail == "auto":
        detail = None
    if url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[5:].partition(";base64,")
        return ImagePart(data=data, media_type=media_type or None, detail=detail)
    return ImagePart(url=url, detail=detail)


def _content(content: Any, where: str) -> list[TextPart | ImagePart]:
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    if not isinstance(content, list):
        raise _invalid("'content' must be a string or an array of content parts", where)
    parts: list[TextPart | ImagePart] = []
    for i, part in enumerate(content):
        at = f"{where}[{i}]"
        if not isinstance(part, dict):
            raise _invalid("a content part must be an object", at)
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            parts.append(TextPart(part["text"], cache=hint_of(part)))
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            parts.append(TextPart(part["refusal"]))
        elif kind == "input_image":
            image = _image(part, at)
            if image is not None:
                parts.append(image)
        elif not isinstance(kind, str):
            raise _invalid("a content part needs a 'type'", f"{at}.type")
        # input_file, input_audio and newer kinds: DROPPED
    return parts


def _arguments(value: Any) -> str:
    return value if isinstance(value, str) else json_encode(value).decode()


class _Turns:
    """Items -> canonical messages, merging consecutive items of one turn."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def add(self, role: str, parts: list[Part]) -> None:
        last = self.messages[-1] if self.messages else None
        if last is not None and last.role == role and role in ("assistant", "tool"):
            last.parts.extend(parts)
        else:
            self.messages.append(Message(role, parts))  # type: ignore[arg-type]

    def item(self, raw: Any, i: int) -> None:
        at = f"input[{i}]"
        if not isinstance(raw, dict):
            raise _invalid("each input item must be an object", at)
        kind = raw.get("type", "message")
        if kind == "message" or (kind is None and "role" in raw):
            role = raw.get("role")
            parts: list[Part] = list(_content(raw.get("content"), f"{at}.content"))
            if role in ("system", "developer"):
                self.messages.append(Message("system", parts))
            elif role in ("user", "assistant"):
                self.add(role, parts)
            else:
                raise _invalid(
                    f"invalid role {role!r}: expected user, assistant, system or developer",
                    f"{at}.role",
                )
        elif kind in ("function_call", "custom_tool_call"):
            call_id, fn = raw.get("call_id"), raw.get("name")
            if not isinstance(call_id, str) or not isinstance(fn, str):
                raise _invalid(f"a {kind} item needs 'call_id' and 'name'", at)
            if kind == "custom_tool_call":
                arguments = json_encode({CUSTOM_INPUT: str(raw.get("input") or "")}).decode()
            else:
                arguments = _arguments(raw.get("arguments", ""))
            self.add("assistant", [ToolCallPart(call_id, fn, arguments)])
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = raw.get("call_id")
            if not isinstance(call_id, str):
                raise _invalid(f"a {kind} item needs 'call_id'", f"{at}.call_id")
            output = raw.get("output", "")
            result = _content(output, f"{at}.output") if output else []
            self.add("tool", [ToolResultPart(call_id, result)])
        elif kind == "reasoning":
            summary = raw.get("summary") or []
            texts = [
                s["text"] for s in summary if isinstance(s, dict) and isinstance(s.get("text"), str)
            ]
            signature = raw.get("encrypted_content")
            signature = signature if isinstance(signature, str) and signature else None
            if texts or signature:
                self.add("assistant", [ReasoningPart("\n\n".join(texts), signature)])
        # item_reference and built-in tool call items: DROPPED


def _tools(raw: Any) -> list[Tool] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _invalid("'tools' must be an array", "tools")
    tools: list[Tool] = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict):
            raise _invalid("each tool must be an object", f"tools[{i}]")
        kind = tool.get("type")
        if kind == "function":
            if not isinstance(tool.get("name"), str):
                raise _invalid("a function tool needs 'name'", f"tools[{i}].name")
            params = tool.get("parameters") or {}
            if not isinstance(params, dict):
                raise _invalid(
                    "'parameters' must be a JSON schema object", f"tools[{i}].parameters"
                )
            strict = tool.get("strict")
            tools.append(Tool(tool["name"], tool.get("description"), params, strict))
        elif kind == "custom" and isinstance(tool.get("name"), str):
            schema = {
                "type": "object",
                "properties": {CUSTOM_INPUT: {"type": "string"}},
                "required": [CUSTOM_INPUT],
            }
            tools.append(Tool(tool["name"], tool.get("description"), schema))
        # built-in tools (web_search, file_search, ...): DROPPED
    return tools


def _tool_choice(raw: Any) -> str | None:
    if raw is None or raw in ("auto", "none", "required"):
        return raw  # type: ignore[no-any-return]
    named = isinstance(raw, dict) and isinstance(raw.get("name"), str)
    if named and raw.get("type") in ("function", "custom"):
        return str(raw["name"])
    if isinstance(raw, dict):
        return None  # allowed_tools, built-in tool choices: DROPPED (the default applies)
    raise _invalid("'tool_choice' must be auto, none, required or an object", "tool_choice")


def _response_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _invalid("'text' must be an object", "text")
    fmt = text.get("format")
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "description", "schema", "strict") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise _invalid(f"unsupported text.format type {fmt.get('type')!r}", "text.format.type")


def _number(body: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise _invalid(f"'{key}' must be a number between {lo:g} and {hi:g}", key)
    return float(value)


def decode_request(body: Any, params: Mapping[str, str] | None = None) -> ChatRequest:
    """Validate a Responses body; errors name the offending parameter."""
    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("'model' is required and must be a string", "model")
    raw = body.get("input")
    turns = _Turns()
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        turns.messages.append(Message("system", [TextPart(instructions)]))
    if isinstance(raw, str):
        turns.messages.append(Message("user", [TextPart(raw)]))
    elif isinstance(raw, list):
        for i, item in enumerate(raw):
            turns.item(item, i)
    else:
        raise _invalid("'input' must be a string or an array of input items", "input")
    if not any(m.role != "system" for m in turns.messages):
        raise _invalid("'input' has no message to answer", "input")
    stream = body.get("stream", False)
    if not isinstance(stream, bool | None):
        raise _invalid("'stream' must be a boolean", "stream")
    limit = body.get("max_output_tokens")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise _invalid("'max_output_tokens' must be an integer >= 1", "max_output_tokens")
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    user = body.get("user") or body.get("safety_identifier")
    return ChatRequest(
        model=model,
        messages=turns.messages,
        stream=bool(stream),
        max_tokens=limit,
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice")),
        parallel_tool_calls=body.get("parallel_tool_calls"),
        response_format=_response_format(body.get("text")),
        reasoning_effort=effort if isinstance(effort, str) else None,
        include_usage=True,
        user=user if isinstance(user, str) else None,
        prompt_cache_key=text_field(body, "prompt_cache_key"),
        prompt_cache_retention=text_field(body, "prompt_cache_retention"),
        extra={k: v for k, v in body.items() if k not in _KNOWN},
        source=Source(name, body),
    )
