"""Gemini ``generateContent`` requests, client side: a wire body (and the model and
method from the URL) -> ``ChatRequest``.

The body is kept as ``source``: a Gemini upstream is sent it as the client wrote it
(``safetySettings``, ``cachedContent``, built-in tools, parts newer than this code...);
for any other upstream the fields the canon has no slot for are left out.
As for Anthropic, validation at the door is only what the gateway needs (a JSON object,
a model in the path); a body the canon cannot be read from is still relayed to a Gemini
upstream, which judges it, and refused with the 400 naming the field for any other.

Thought signatures come back where ``stream.py`` put them: a signature on a text or
thought part becomes a signed ``ReasoningPart`` before that text (``codec.encode_request``
writes it back on the same text part), one on a ``functionCall`` the call's signature.
Gemini pairs results with calls by function name and order, not by id; each call gets
an id here (its own ``id`` when the client sent one) and each ``functionResponse`` the
id of the earliest call of that name it has not answered yet.
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
    Source,
    TextPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
)

name = "gemini"

_json_encode = msgspec.json.Encoder().encode

THINKING_LEVELS = {"minimal": "minimal", "low": "low", "medium": "medium", "high": "high"}
"""Gemini 3 ``thinkingLevel`` (lower-cased) -> ``reasoning_effort``."""


def _invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError("invalid_request", message, param=param)


def _image(raw: dict[str, Any], param: str) -> ImagePart:
    inline = raw.get("inlineData")
    if isinstance(inline, dict):
        data, mime = inline.get("data"), inline.get("mimeType")
        if not isinstance(data, str):
            raise _invalid(f"{param}.inlineData.data: must be a base64 string", param)
        return ImagePart(data=data, media_type=mime if isinstance(mime, str) else None)
    file = raw["fileData"]
    uri, mime = (file.get("fileUri"), file.get("mimeType")) if isinstance(file, dict) else (0, 0)
    if not isinstance(uri, str):
        raise _invalid(f"{param}.fileData.fileUri: must be a string", param)
    return ImagePart(url=uri, media_type=mime if isinstance(mime, str) else None)


class _Calls:
    """Call ids by function name, for pairing results with calls."""

    def __init__(self) -> None:
        self.open: dict[str, list[str]] = {}
        self.n = 0

    def new(self, function: str, given: Any) -> str:
        self.n += 1
        call_id = given if isinstance(given, str) and given else f"call_gemini_{self.n}"
        self.open.setdefault(function, []).append(call_id)
        return call_id

    def answer(self, function: str, given: Any) -> str:
        if isinstance(given, str) and given:
            ids = self.open.get(function, [])
            if given in ids:
                ids.remove(given)
            return given
        pending = self.open.get(function)
        if pending:
            return pending.pop(0)
        self.n += 1
        return f"call_gemini_{self.n}"


def _result(raw: dict[str, Any], calls: _Calls, param: str) -> ToolResultPart:
    function = raw.get("name")
    if not isinstance(function, str) or not function:
        raise _invalid(f"{param}.functionResponse.name: must be a non-empty string", param)
    response = raw.get("response")
    content: list[TextPart | ImagePart] = []
    is_error = False
    if isinstance(response, dict) and set(response) == {"output"}:
        output = response["output"]
        text = output if isinstance(output, str) else _json_encode(output).decode()
    elif isinstance(response, dict) and set(response) == {"error"}:
        error = response["error"]
        text = error if isinstance(error, str) else _json_encode(error).decode()
        is_error = True
    else:
        text = _json_encode(response if response is not None else {}).decode()
    if text:
        content.append(TextPart(text))
    return ToolResultPart(calls.answer(function, raw.get("id")), content, is_error, function)


def _parts(raw: Any, role: str, calls: _Calls, param: str) -> list[Part]:
    if not isinstance(raw, list):
        raise _invalid(f"{param}.parts: must be an array", param)
    out: list[Part] = []
    for j, part in enumerate(raw):
        where = f"{param}.parts[{j}]"
        if not isinstance(part, dict):
            raise _invalid(f"{where}: must be an object", where)
        signature = part.get("thoughtSignature")
        signature = signature if isinstance(signature, str) and signature else None
        if "functionCall" in part:
            call = part["functionCall"]
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                raise _invalid(f"{where}.functionCall.name: must be a string", where)
            args = call.get("args")
            arguments = _json_encode(args if isinstance(args, dict) else {}).decode()
            call_id = calls.new(call["name"], call.get("id"))
            out.append(ToolCallPart(call_id, call["name"], arguments, signature))
        elif "functionResponse" in part:
            response = part["functionResponse"]
            if not isinstance(response, dict):
                raise _invalid(f"{where}.functionResponse: must be an object", where)
            out.append(_result(response, calls, where))
        elif "inlineData" in part or "fileData" in part:
            out.append(_image(part, where))
        elif "text" in part:
            text = part["text"]
            if not isinstance(text, str):
                raise _invalid(f"{where}.text: must be a string", where)
            if part.get("thought") is True:
                out.append(ReasoningPart(text, signature))
            else:
                if signature is not None:
                    out.append(ReasoningPart(signature=signature))
                out.append(TextPart(text))
        elif signature is not None and role == "model":
            out.append(ReasoningPart(signature=signature))
        else:
            raise _invalid(f"{where}: a part the gateway cannot translate", where)
    return out


def _messages(body: dict[str, Any]) -> list[Message]:
    messages: list[Message] = []
    system = body.get("systemInstruction", body.get("system_instruction"))
    if system is not None:
        parts = system.get("parts") if isinstance(system, dict) else None
        texts = [p.get("text") for p in parts if isinstance(p, dict)] if parts else []
        if isinstance(system, str):
            texts = [system]
        joined = [TextPart(t) for t in texts if isinstance(t, str) and t]
        if joined:
            messages.append(Message("system", list[Part](joined)))
    contents = body.get("contents")
    if isinstance(contents, dict):
        contents = [contents]
    if not isinstance(contents, list) or not contents:
        raise _invalid("contents: must be a non-empty array", "contents")
    calls = _Calls()
    for i, content in enumerate(contents):
        param = f"contents[{i}]"
        if not isinstance(content, dict):
            raise _invalid(f"{param}: must be an object", param)
        role = content.get("role") or "user"
        if role not in ("user", "model", "function"):
            raise _invalid(f"{param}.role: must be 'user' or 'model'", param)
        parts = _parts(content.get("parts", []), role, calls, param)
        if role == "model":
            messages.append(Message("assistant", parts))
            continue
        results = [p for p in parts if isinstance(p, ToolResultPart)]
        others: list[Part] = [p for p in parts if not isinstance(p, ToolResultPart)]
        if results:
            messages.append(Message("tool", list[Part](results)))
        if others:
            messages.append(Message("user", others))
    return messages


def _tools(body: dict[str, Any]) -> list[Tool] | None:
    raw = body.get("tools")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _invalid("tools: must be an array", "tools")
    out: list[Tool] = []
    for i, tool in enumerate(raw):
        declarations = tool.get("functionDeclarations") if isinstance(tool, dict) else None
        if not isinstance(declarations, list):
            raise _invalid(f"tools[{i}]: only functionDeclarations can be translated", "tools")
        for d in declarations:
            if not isinstance(d, dict) or not isinstance(d.get("name"), str):
                raise _invalid(f"tools[{i}].functionDeclarations: each needs a name", "tools")
            schema = d.get("parametersJsonSchema", d.get("parameters"))
            description = d.get("description")
            out.append(
                Tool(
                    d["name"],
                    description if isinstance(description, str) else None,
                    _json_schema(schema) if isinstance(schema, dict) else {"type": "object"},
                )
            )
    return out or None


def _json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Gemini's Schema (upper-case ``type`` words) as JSON Schema (lower-case)."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            out[key] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out[key] = {k: _json_schema(v) if isinstance(v, dict) else v for k, v in value.items()}
        elif key == "items" and isinstance(value, dict):
            out[key] = _json_schema(value)
        elif key in ("anyOf", "oneOf", "allOf") and isinstance(value, list):
            out[key] = [_json_schema(v) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    return out


def _tool_choice(body: dict[str, Any]) -> str | None:
    config = body.get("toolConfig")
    calling = config.get("functionCallingConfig") if isinstance(config, dict) else None
    if not isinstance(calling, dict):
        return None
    mode = str(calling.get("mode") or "AUTO").upper()
    allowed = calling.get("allowedFunctionNames")
    if mode in ("ANY", "VALIDATED") and isinstance(allowed, list) and len(allowed) == 1:
        return str(allowed[0])
    return {"AUTO": "auto", "NONE": "none", "ANY": "required"}.get(mode)


def _typed(config: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _invalid(f"generationConfig.{key}: wrong type", f"generationConfig.{key}")
    return value


def _decode(body: dict[str, Any], model: str, stream: bool) -> ChatRequest:
    config = body.get("generationConfig") or {}
    if not isinstance(config, dict):
        raise _invalid("generationConfig: must be an object", "generationConfig")
    stop = _typed(config, "stopSequences", list)
    request = ChatRequest(
        model=model,
        messages=_messages(body),
        stream=stream,
        max_tokens=_typed(config, "maxOutputTokens", int),
        temperature=_typed(config, "temperature", (int, float)),
        top_p=_typed(config, "topP", (int, float)),
        stop=[str(s) for s in stop] if stop else None,
        seed=_typed(config, "seed", int),
        n=_typed(config, "candidateCount", int),
        tools=_tools(body),
        tool_choice=_tool_choice(body),
    )
    for wire, key in (
        ("topK", "top_k"),
        ("presencePenalty", "presence_penalty"),
        ("frequencyPenalty", "frequency_penalty"),
    ):
        value = _typed(config, wire, (int, float))
        if value is not None:
            request.extra[key] = value
    schema = config.get("responseJsonSchema", config.get("responseSchema"))
    if isinstance(schema, dict):
        request.response_format = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": _json_schema(schema)},
        }
    elif config.get("responseMimeType") == "application/json":
        request.response_format = {"type": "json_object"}
    thinking = config.get("thinkingConfig")
    if isinstance(thinking, dict):
        budget = thinking.get("thinkingBudget")
        if isinstance(budget, int) and not isinstance(budget, bool) and budget >= 0:
            request.reasoning_budget = budget
        level = thinking.get("thinkingLevel")
        if isinstance(level, str) and level.lower() in THINKING_LEVELS:
            request.reasoning_effort = THINKING_LEVELS[level.lower()]
    return request


def decode_request(body: Any, params: Mapping[str, str] | None = None) -> ChatRequest:
    """A ``GenerateContentRequest`` as the canon; the model and whether it streams come
    from the URL (``params``: ``model``, ``method``, the query's ``alt``). Only a body
    that is no object, or a path without a model, is refused here (module docstring)."""
    params = params or {}
    model = params.get("model", "").removeprefix("models/")
    if not model:
        raise _invalid("the model is missing from the path (/v1beta/models/{model}:...)")
    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object")
    stream = params.get("method") == "streamGenerateContent"
    array = stream and params.get("alt") != "sse"
    try:
        request = _decode(body, model, stream)
    except GatewayError as error:
        request = ChatRequest(model=model, messages=[], stream=stream)
        request.source = Source(name, body, untranslatable=(error.message, error.param))
    else:
        request.source = Source(name, body)
    request.source.array = array
    return request


def decode_count_request(body: Any, params: Mapping[str, str] | None = None) -> ChatRequest:
    """A ``countTokens`` body: ``{"contents": ...}`` or ``{"generateContentRequest":
    {...}}`` (the form that counts tools and the system instruction too)."""
    inner = body.get("generateContentRequest") if isinstance(body, dict) else None
    request = decode_request(inner if isinstance(inner, dict) else body, params)
    if request.source is not None:
        request.source.body = body if isinstance(body, dict) else {}
    return request
