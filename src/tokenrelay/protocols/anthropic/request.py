"""Anthropic Messages requests, client side: a wire body -> ``ChatRequest``.

The body is kept as ``source``: an Anthropic upstream is sent it as the client wrote it,
so nothing the canon leaves out (cache_control, documents, server tools, top_k,
context_management, roles and blocks newer than this code, ...) is lost in a
same-protocol relay. The other direction is ``translate.py``.

Validation at the door is only what the gateway itself needs: a JSON object with a
model name. A body the canon cannot be read from (a field of the wrong shape, a block
the role cannot hold) is still relayed to an Anthropic upstream, which judges it and
whose error reaches the client verbatim; translating it for any other upstream is
refused with the 400 that names the field (``Source.untranslatable``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from ...events import (
    ChatRequest,
    GatewayError,
    ImagePart,
    Message,
    Part,
    ReasoningPart,
    Role,
    Source,
    TextPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
)
from .wire import name

_json_encode = msgspec.json.Encoder().encode


def _invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError("invalid_request", message, param=param)


_KNOWN = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "thinking",
        "metadata",
        "output_config",
        "output_format",
    }
)
_USER_BLOCKS = frozenset({"text", "image", "tool_result"})
_ASSISTANT_BLOCKS = frozenset({"text", "thinking", "redacted_thinking", "tool_use"})
_ALL_BLOCKS = _USER_BLOCKS | _ASSISTANT_BLOCKS


def _number(body: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise _invalid(f"{key}: must be a number between {lo:g} and {hi:g}", key)
    return float(value)


def _integer(value: Any, param: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise _invalid(f"{param}: must be an integer >= {lo}", param)
    return value


def _string(block: dict[str, Any], key: str, where: str) -> str:
    value = block.get(key)
    if not isinstance(value, str):
        raise _invalid(f"{where}.{key}: must be a string", f"{where}.{key}")
    return value


def _image(block: dict[str, Any], where: str) -> ImagePart | None:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _invalid(f"{where}.source: must be an object", f"{where}.source")
    kind = source.get("type")
    if kind == "base64":
        return ImagePart(
            data=_string(source, "data", f"{where}.source"),
            media_type=_string(source, "media_type", f"{where}.source"),
        )
    if kind == "url":
        return ImagePart(url=_string(source, "url", f"{where}.source"))
    return None  # a file id, or a newer source kind: see translate.ADJUSTMENTS


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """``content`` as a list of block objects (a string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _invalid(f"{where}: must be a string or an array of content blocks", where)
    for i, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _invalid(f"{where}[{i}]: must be an object with a string type", f"{where}[{i}]")
    return content


def _result_content(content: Any, where: str) -> list[TextPart | ImagePart]:
    if content is None:
        return []
    parts: list[TextPart | ImagePart] = []
    for i, block in enumerate(_blocks(content, where)):
        kind = block["type"]
        if kind == "text":
            parts.append(TextPart(_string(block, "text", f"{where}[{i}]")))
        elif kind == "image":
            image = _image(block, f"{where}[{i}]")
            if image is not None:
                parts.append(image)
    return parts


def _turn(raw: Any, i: int) -> list[Message]:
    """One wire turn as canonical messages: a user turn splits into runs of tool
    results (a ``tool`` message) and of other content (a ``user`` message)."""
    where = f"messages[{i}]"
    if not isinstance(raw, dict):
        raise _invalid(f"{where}: must be an object", where)
    role: Role
    if raw.get("role") == "user":
        role = "user"
    elif raw.get("role") == "assistant":
        role = "assistant"
    elif raw.get("role") == "system":
        # A system message mid-conversation (beta mid-conversation-system-2026-04-07,
        # Claude Code 2.1): a canonical system message where it stands.
        return _system(raw.get("content"), f"{where}.content")
    else:
        raise _invalid(f"{where}.role: must be 'user', 'assistant' or 'system'", f"{where}.role")
    allowed = _USER_BLOCKS if role == "user" else _ASSISTANT_BLOCKS
    out: list[Message] = []
    for j, block in enumerate(_blocks(raw.get("content"), f"{where}.content")):
        at = f"{where}.content[{j}]"
        kind = block["type"]
        part: Part | None
        if kind in _ALL_BLOCKS and kind not in allowed:
            raise _invalid(f"{at}: a {role} turn cannot hold {kind} blocks", f"{at}.type")
        if kind == "text":
            part = TextPart(_string(block, "text", at))
        elif kind == "image":
            part = _image(block, at)
        elif kind == "tool_use":
            tool_input = block.get("input", {})
            if not isinstance(tool_input, dict):
                raise _invalid(f"{at}.input: must be an object", f"{at}.input")
            arguments = _json_encode(tool_input).decode()
            part = ToolCallPart(_string(block, "id", at), _string(block, "name", at), arguments)
        elif kind == "tool_result":
            is_error = block.get("is_error", False)
            if not isinstance(is_error, bool | None):
                raise _invalid(f"{at}.is_error: must be a boolean", f"{at}.is_error")
            content = _result_content(block.get("content"), f"{at}.content")
            part = ToolResultPart(_string(block, "tool_use_id", at), content, bool(is_error))
        elif kind == "thinking":
            part = ReasoningPart(_string(block, "thinking", at), _string(block, "signature", at))
        elif kind == "redacted_thinking":
            part = ReasoningPart(redacted=_string(block, "data", at))
        else:
            part = None  # no canonical part: see translate.ADJUSTMENTS
        if part is None:
            continue
        target: Role = "tool" if isinstance(part, ToolResultPart) else role
        if not out or out[-1].role != target:
            out.append(Message(target, []))
        out[-1].parts.append(part)
    return out or [Message(role, [])]


def _system(raw: Any, where: str = "system") -> list[Message]:
    if raw is None:
        return []
    parts: list[Part] = []
    for i, block in enumerate(_blocks(raw, where)):
        if block["type"] != "text":
            raise _invalid(f"{where}[{i}]: must be a text block", f"{where}[{i}].type")
        parts.append(TextPart(_string(block, "text", f"{where}[{i}]")))
    return [Message("system", parts)] if parts else []


def _tools(raw: Any) -> list[Tool] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _invalid("tools: must be an array", "tools")
    tools: list[Tool] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise _invalid(f"tools[{i}]: must be an object", f"tools[{i}]")
        if item.get("type") not in (None, "custom"):
            continue  # a server tool: see translate.ADJUSTMENTS
        schema = item.get("input_schema")
        if not isinstance(schema, dict):
            raise _invalid(
                f"tools[{i}].input_schema: must be an object", f"tools[{i}].input_schema"
            )
        description = item.get("description")
        if description is not None and not isinstance(description, str):
            raise _invalid(f"tools[{i}].description: must be a string", f"tools[{i}].description")
        strict = item.get("strict")
        tools.append(
            Tool(
                _string(item, "name", f"tools[{i}]"),
                description,
                schema,
                strict if isinstance(strict, bool) else None,
            )
        )
    return tools


def _tool_choice(raw: Any) -> tuple[str | None, bool | None]:
    if raw is None:
        return None, None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind not in ("auto", "any", "tool", "none"):
        raise _invalid("tool_choice.type: must be auto, any, tool or none", "tool_choice.type")
    assert isinstance(raw, dict)
    if kind == "tool":
        choice = _string(raw, "name", "tool_choice")
    else:
        choice = "required" if kind == "any" else str(kind)
    disable = raw.get("disable_parallel_tool_use")
    if not isinstance(disable, bool | None):
        raise _invalid(
            "tool_choice.disable_parallel_tool_use: must be a boolean",
            "tool_choice.disable_parallel_tool_use",
        )
    return choice, (False if disable else None)


def _reasoning(body: dict[str, Any]) -> tuple[int | None, str | None]:
    """``thinking`` (and ``output_config.effort``) -> (budget, effort). ``enabled`` has a
    budget; ``adaptive`` lets the model decide, at ``output_config.effort`` when given
    (else the upstream's default); ``disabled`` and newer types set neither."""
    budget: int | None = None
    effort: str | None = None
    thinking = body.get("thinking")
    if thinking is not None:
        if not isinstance(thinking, dict) or not isinstance(thinking.get("type"), str):
            raise _invalid("thinking: must be an object with a string type", "thinking")
        if thinking["type"] == "enabled":
            budget = _integer(thinking.get("budget_tokens"), "thinking.budget_tokens", 1)
    config = body.get("output_config")
    if isinstance(config, dict):
        wire_effort = config.get("effort")
        if isinstance(wire_effort, str):
            effort = "xhigh" if wire_effort == "max" else wire_effort
    return budget, effort


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """``output_config.format`` (or the older beta's top-level ``output_format``)."""
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if fmt is None:
        fmt = body.get("output_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise _invalid(
                "output_config.format.schema: must be an object", "output_config.format.schema"
            )
        return {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema, "strict": True},
        }
    return None


def decode_request(body: Any, params: Mapping[str, str] | None = None) -> ChatRequest:
    """A Messages body as the canon. Only a body that is no object, or has no model
    name, is refused here; any other problem is recorded on ``source`` (see the module
    docstring) and the canon is what could be read: the model and the stream flag."""
    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model: Field required (a non-empty string)", "model")
    try:
        return _decode(body, model)
    except GatewayError as error:
        max_tokens = body.get("max_tokens")
        return ChatRequest(
            model=model,
            messages=[],
            stream=body.get("stream") is True,
            max_tokens=max_tokens if type(max_tokens) is int and max_tokens > 0 else None,
            source=Source(name, body, untranslatable=(error.message, error.param)),
        )


def decode_count_request(body: Any, params: Mapping[str, str] | None = None) -> ChatRequest:
    """A ``count_tokens`` body (a Messages body without ``max_tokens`` or ``stream``)."""
    if isinstance(body, dict) and "max_tokens" not in body:
        request = decode_request({**body, "max_tokens": 1})
        if request.source is not None:
            request.source.body = body
        return request
    return decode_request(body)


def _decode(body: dict[str, Any], model: str) -> ChatRequest:
    """The strict reading; a ``GatewayError`` names the field the canon cannot take."""
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise _invalid("messages: must be a non-empty array", "messages")
    if body.get("max_tokens") is None:
        raise _invalid("max_tokens: Field required", "max_tokens")
    max_tokens = _integer(body["max_tokens"], "max_tokens", 1)
    stream = body.get("stream", False)
    if not isinstance(stream, bool | None):
        raise _invalid("stream: must be a boolean", "stream")
    stop = body.get("stop_sequences")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise _invalid("stop_sequences: must be an array of strings", "stop_sequences")
    top_k = body.get("top_k")
    if top_k is not None:
        _integer(top_k, "top_k", 0)
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _invalid("metadata: must be an object", "metadata")
    user = metadata.get("user_id") if metadata else None
    messages = _system(body.get("system"))
    for i, raw in enumerate(raw_messages):
        messages.extend(_turn(raw, i))
    choice, parallel = _tool_choice(body.get("tool_choice"))
    budget, effort = _reasoning(body)
    return ChatRequest(
        model=model,
        messages=messages,
        stream=bool(stream),
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0, 1),
        top_p=_number(body, "top_p", 0, 1),
        stop=stop,
        tools=_tools(body.get("tools")),
        tool_choice=choice,
        parallel_tool_calls=parallel,
        response_format=_response_format(body),
        reasoning_effort=effort,
        reasoning_budget=budget,
        user=user if isinstance(user, str) else None,
        extra={k: v for k, v in body.items() if k not in _KNOWN},
        source=Source(name, body),
    )
