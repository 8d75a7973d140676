"""The OpenAI Chat Completions protocol: requests, non-streaming bodies and errors.

The streaming half (frames <-> events, and the same-protocol passthrough) is in
``stream.py``. Wire reference: the official ``openai`` SDK's types.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec

from ...events import (
    ChatRequest,
    Event,
    Finish,
    GatewayError,
    ImagePart,
    Message,
    Part,
    ReasoningDelta,
    ReasoningPart,
    Source,
    Start,
    TextDelta,
    TextPart,
    Tool,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    kind_for_status,
)
from ...fold import Fold, Tally
from ..base import bearer
from ..cache_hints import hint_of, text_field
from .passthrough import OpenAIPassthrough
from .stream import (
    FINISH_FROM_WIRE,
    FINISH_TO_WIRE,
    OpenAIStreamDecoder,
    OpenAIStreamEncoder,
    call_signature,
    error_object,
    opaque_reasoning,
    reasoning_details,
    usage_from_wire,
    usage_to_wire,
)
from .stream import error_frame as error_frame  # part of the protocol's interface
from .translate import DROPPED as DROPPED
from .translate import effort_for_budget as effort_for_budget
from .translate import encode_request as encode_request
from .translate import wire_call

name = "openai"
# None: OpenAI's own headers (OpenAI-Organization, OpenAI-Project) name the account,
# which is the gateway's, not the client's.
FORWARDED_HEADERS: tuple[str, ...] = ()

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.decode


def _invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError("invalid_request", message, code="invalid_value", param=param)


# --- client side: wire request -> ChatRequest ---------------------------------------

_KNOWN = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "n",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
        "user",
    }
)


def _number(body: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise _invalid(f"'{key}' must be a number between {lo:g} and {hi:g}", key)
    return float(value)


def _integer(body: dict[str, Any], key: str, lo: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise _invalid(f"'{key}' must be an integer >= {lo}", key)
    return value


def _content_parts(content: Any, param: str) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    if not isinstance(content, list):
        raise _invalid("'content' must be a string or an array of content parts", param)
    parts: list[Part] = []
    for i, item in enumerate(content):
        where = f"{param}[{i}]"
        if not isinstance(item, dict):
            raise _invalid("a content part must be an object", where)
        kind = item.get("type")
        if kind == "text" and isinstance(item.get("text"), str):
            parts.append(TextPart(item["text"], cache=hint_of(item)))
        elif kind == "image_url":
            image = item.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise _invalid("'image_url.url' must be a string", f"{where}.image_url.url")
            parts.append(
                _image_from_url(url, image.get("detail") if isinstance(image, dict) else None)
            )
        elif kind == "refusal" and isinstance(item.get("refusal"), str):
            parts.append(TextPart(item["refusal"]))
        else:
            raise _invalid(f"unsupported content part type {kind!r}", f"{where}.type")
    return parts


def _image_from_url(url: str, detail: str | None) -> ImagePart:
    if url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[5:].partition(";base64,")
        return ImagePart(data=data, media_type=media_type or None, detail=detail)
    return ImagePart(url=url, detail=detail)


def _message(raw: Any, i: int) -> Message:
    param = f"messages[{i}]"
    if not isinstance(raw, dict):
        raise _invalid("each message must be an object", param)
    role = raw.get("role")
    content = raw.get("content")
    name_ = raw.get("name") if isinstance(raw.get("name"), str) else None
    if role in ("system", "developer"):
        return Message("system", _content_parts(content, f"{param}.content"), name_)
    if role == "user":
        return Message("user", _content_parts(content, f"{param}.content"), name_)
    if role == "assistant":
        parts: list[Part] = []
        reasoning = raw.get("reasoning_content")
        signature = redacted = None
        for detail in raw.get("reasoning_details") or ():
            sig, data = opaque_reasoning(detail)
            signature, redacted = signature or sig, redacted or data
        if (isinstance(reasoning, str) and reasoning) or signature:
            parts.append(ReasoningPart(reasoning if isinstance(reasoning, str) else "", signature))
        if redacted:
            parts.append(ReasoningPart(redacted=redacted))
        parts.extend(_content_parts(content, f"{param}.content"))
        calls = raw.get("tool_calls") or []
        if not isinstance(calls, list):
            raise _invalid("'tool_calls' must be an array", f"{param}.tool_calls")
        for j, call in enumerate(calls):
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise _invalid("a tool call needs function.name", f"{param}.tool_calls[{j}]")
            arguments = fn.get("arguments", "")
            if not isinstance(arguments, str):
                arguments = _json_encode(arguments).decode()
            parts.append(
                ToolCallPart(str(call.get("id") or ""), fn["name"], arguments, call_signature(call))
            )
        return Message("assistant", parts, name_)
    if role == "tool":
        call_id = raw.get("tool_call_id")
        if not isinstance(call_id, str):
            raise _invalid("a tool message needs 'tool_call_id'", f"{param}.tool_call_id")
        result = [
            p
            for p in _content_parts(content, f"{param}.content")
            if isinstance(p, TextPart | ImagePart)
        ]
        return Message("tool", [ToolResultPart(call_id, result)])
    raise _invalid(
        f"invalid role {role!r}: expected system, developer, user, assistant or tool",
        f"{param}.role",
    )


def _tools(raw: Any) -> list[Tool] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _invalid("'tools' must be an array", "tools")
    tools = []
    for i, item in enumerate(raw):
        fn = item.get("function") if isinstance(item, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _invalid("each tool needs function.name", f"tools[{i}].function.name")
        params = fn.get("parameters") or {}
        if not isinstance(params, dict):
            raise _invalid(
                "'parameters' must be a JSON schema object", f"tools[{i}].function.parameters"
            )
        tools.append(Tool(fn["name"], fn.get("description"), params, fn.get("strict")))
    return tools


def _tool_choice(raw: Any) -> str | None:
    if raw is None or raw in ("auto", "none", "required"):
        return raw  # type: ignore[no-any-return]
    if isinstance(raw, dict):
        fn = raw.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return str(fn["name"])
    raise _invalid("'tool_choice' must be auto, none, required or a named function", "tool_choice")


def decode_request(body: Any, params: Mapping[str, str] | None = None) -> ChatRequest:
    """Validate a Chat Completions body; errors name the offending parameter."""
    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("'model' is required and must be a string", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("'messages' must be a non-empty array", "messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool | None):
        raise _invalid("'stream' must be a boolean", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _invalid("'stream_options' must be an object", "stream_options")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    elif stop is not None and not (
        isinstance(stop, list) and all(isinstance(s, str) for s in stop)
    ):
        raise _invalid("'stop' must be a string or an array of strings", "stop")
    max_tokens = _integer(body, "max_completion_tokens", 1) or _integer(body, "max_tokens", 1)
    effort = body.get("reasoning_effort")
    if effort is not None and not isinstance(effort, str):
        raise _invalid("'reasoning_effort' must be a string", "reasoning_effort")
    fmt = body.get("response_format")
    if fmt is not None and not isinstance(fmt, dict):
        raise _invalid("'response_format' must be an object", "response_format")
    seed = _integer(body, "seed", -(2**63))
    return ChatRequest(
        model=model,
        messages=[_message(m, i) for i, m in enumerate(messages)],
        stream=bool(stream),
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        stop=stop,
        seed=seed,
        n=_integer(body, "n", 1),
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice")),
        parallel_tool_calls=body.get("parallel_tool_calls"),
        response_format=fmt,
        reasoning_effort=effort,
        include_usage=bool(options and options.get("include_usage")),
        user=body.get("user") if isinstance(body.get("user"), str) else None,
        prompt_cache_key=text_field(body, "prompt_cache_key"),
        prompt_cache_retention=text_field(body, "prompt_cache_retention"),
        extra={k: v for k, v in body.items() if k not in _KNOWN},
        source=Source(name, body),
    )


# --- upstream side (encode_request and the drop table: translate.py) -------


def url(base_url: str, model: str, stream: bool) -> str:
    return base_url.rstrip("/") + "/chat/completions"


headers = bearer


def stream_decoder() -> OpenAIStreamDecoder:
    return OpenAIStreamDecoder()


def decode_error(status: int, body: bytes) -> GatewayError:
    """An upstream's error response as a ``GatewayError`` keeping its status."""
    message = ""
    code = param = None
    try:
        data = _json_decode(body)
    except msgspec.DecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        code = error.get("code")
        param = error.get("param")
    elif isinstance(error, str):
        message = error
    if not message:
        message = (
            body[:500].decode("utf-8", "replace").strip() or f"upstream returned HTTP {status}"
        )
    return GatewayError(
        kind_for_status(status),
        message,
        status=status,
        code=str(code) if code is not None else None,
        param=param if isinstance(param, str) else None,
    )


# --- client side: events -> wire ----------------------------------------------------


def stream_encoder(request: ChatRequest, model: str, tally: Tally) -> OpenAIStreamEncoder:
    return OpenAIStreamEncoder(model, request.include_usage, tally)


def passthrough(request: ChatRequest, model: str, tally: Tally) -> OpenAIPassthrough:
    return OpenAIPassthrough(model, request.include_usage, tally)


def encode_response(fold: Fold, model: str) -> dict[str, Any]:
    """The ``chat.completion`` body: the fold of the stream."""
    choices = []
    for c in fold.ordered_choices():
        message: dict[str, Any] = {"role": "assistant", "content": c.text or None}
        if c.reasoning:
            message["reasoning_content"] = c.reasoning
        details = reasoning_details(c.reasoning_signature, c.reasoning_redacted)
        if details:
            message["reasoning_details"] = details
        calls = c.ordered_tool_calls()
        if calls:
            message["tool_calls"] = [
                wire_call(t.id, t.name, t.arguments, t.signature) for t in calls
            ]
        elif message["content"] is None:
            message["content"] = ""
        message["refusal"] = None
        choices.append(
            {
                "index": c.index,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_TO_WIRE.get(c.finish_reason or "stop", "stop"),
            }
        )
    body: dict[str, Any] = {
        "id": fold.id or f"chatcmpl-{int(time.time() * 1000):x}",
        "object": "chat.completion",
        "created": fold.created or int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage_to_wire(fold.usage_or_estimate()),
    }
    fingerprint = fold.extra.get("system_fingerprint")
    if fingerprint is not None:
        body["system_fingerprint"] = fingerprint
    return body


def error_body(error: GatewayError) -> dict[str, Any]:
    return {"error": error_object(error.kind, error.message, error.code, error.param)}


def decode_response(body: Any) -> list[Event]:
    """A ``chat.completion`` body as the events of its stream (the SDK's ``create()``
    folds them as it folds a stream)."""
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
            out.append(ToolCallDelta(k, call.get("id"), fn.get("name"), arguments, choice=index))
        reason = choice.get("finish_reason")
        if reason:
            out.append(Finish(FINISH_FROM_WIRE.get(reason, "stop"), index))
    if body.get("usage"):
        out.append(usage_from_wire(body["usage"]))
    return out


def model_list(models: list[tuple[str, str]]) -> dict[str, Any]:
    """``GET /v1/models``: ``{"object": "list", "data": [{"id", "object", ...}]}``."""
    data = [{"id": m, "object": "model", "created": 0, "owned_by": owner} for m, owner in models]
    return {"object": "list", "data": data}
