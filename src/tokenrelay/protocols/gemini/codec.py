"""The Gemini ``generateContent`` protocol, upstream side: the gateway is the client of
``generativelanguage.googleapis.com`` (or any Gemini-compatible endpoint).

``base_url`` is the API version root, e.g. ``https://generativelanguage.googleapis.com/v1beta``.
The stream decoder is in ``stream.py``, the JSON Schema rewrite in
``schema.py``. What the canon holds that Gemini cannot take is listed in
:data:`DROPPED`.

Thought signatures: Gemini wants each one back on the part that carried it. A call's
signature travels as ``ToolCallPart.signature`` and goes back on its ``functionCall``
part. A signature that came on a text or thought part travels as the signature of a
``ReasoningPart`` and goes back on the first text part after it in the same assistant
message (where Gemini 2.5 puts it); with no text part to carry it, it goes back as a
``thought: true`` part holding the reasoning text. Gemini 3 rejects a step whose first
function call has no signature, so a history made elsewhere (another provider, a client
that cannot carry signatures) gets Google's documented placeholder signature instead.
"""

from __future__ import annotations

import math
import mimetypes
from typing import Any
from urllib.parse import urlsplit

import msgspec

from ...events import (
    ChatRequest,
    Event,
    GatewayError,
    ImagePart,
    Message,
    Part,
    ReasoningPart,
    TextPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
    kind_for_status,
)
from ...fold import Tally
from ...sse import ServerSentEvent
from .egress import (
    CLIENT_DROPPED,
    FINISH_TO_WIRE,
    GeminiPassthrough,
    GeminiStreamEncoder,
    encode_response,
    error_body,
    error_frame,
    model_info,
    model_list,
)
from .request import decode_count_request, decode_request
from .schema import gemini_schema
from .stream import GeminiStreamDecoder, error_from_wire

__all__ = [
    "CLIENT_DROPPED",
    "DROPPED",
    "FINISH_TO_WIRE",
    "FORWARDED_HEADERS",
    "REASONING_BUDGETS",
    "SKIP_SIGNATURE",
    "decode_count_request",
    "decode_error",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "error_body",
    "error_frame",
    "gemini_schema",
    "headers",
    "model_info",
    "model_list",
    "name",
    "passthrough",
    "stream_decoder",
    "stream_encoder",
    "url",
]

name = "gemini"

FORWARDED_HEADERS: tuple[str, ...] = ()
"""Gemini has no request headers of its own worth forwarding (the key is the gateway's)."""

_json_decode = msgspec.json.decode

SKIP_SIGNATURE = "skip_thought_signature_validator"
"""Google's documented placeholder ``thoughtSignature`` for function calls the model
did not produce itself (history from another model); Gemini 3 accepts it in place of
the real one."""

REASONING_BUDGETS: dict[str, int] = {
    "none": 0,
    "minimal": 512,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
    "xhigh": 24576,
}
"""``reasoning_effort`` -> ``thinkingConfig.thinkingBudget`` (tokens). ``high`` is the
largest budget every 2.5 model accepts (Flash's ceiling; Pro allows 32768); ``xhigh``
(Anthropic's ``max`` effort, Claude Code's highest) gets the same. ``none``
turns thinking off where the model allows it (2.5 Pro does not and answers 400).
``reasoning_budget``, when given, wins over the effort."""

_MAX_STOP = 5  # Gemini rejects more than five stop sequences

DROPPED: list[tuple[str, str, str]] = [
    ("user", "dropped", "Gemini has no end-user field"),
    ("prompt_cache_key, prompt_cache_retention", "dropped", "Gemini caches implicitly"),
    (
        "TextPart.cache (cache_control hints)",
        "dropped",
        "this provider caches every prompt by itself, with no per-part hint",
    ),
    ("parallel_tool_calls", "dropped", "Gemini has no switch; it may always call in parallel"),
    ("include_usage", "ignored", "Gemini reports usageMetadata on every frame anyway"),
    ("stream", "ignored", "streaming is chosen by the URL (:streamGenerateContent)"),
    ("n", "n > 1 -> candidateCount; n == 1 omitted", "1 is Gemini's default"),
    ("stop", "first 5 kept", "Gemini rejects more than five stopSequences"),
    (
        "extra",
        "only top_k, presence_penalty, frequency_penalty (-> topK, presencePenalty, "
        "frequencyPenalty) kept",
        "other protocols' fields have no Gemini meaning",
    ),
    ("tool_choice without tools", "dropped", "toolConfig without tools is an error"),
    ("Tool.strict", "dropped", "Gemini has no strict mode for declarations"),
    (
        "Tool.parameters",
        "rewritten by gemini_schema(); omitted when it has no properties",
        "the Schema dialect rejects JSON-Schema-only keys and empty OBJECT properties",
    ),
    (
        "response_format json_schema",
        "schema rewritten by gemini_schema() -> responseSchema; name/strict dropped",
        "same Schema dialect",
    ),
    (
        "reasoning_effort",
        "-> thinkingBudget by REASONING_BUDGETS; unknown words dropped",
        "Gemini 2.5 takes a budget; Gemini 3 also accepts it for compatibility",
    ),
    ("Message.name", "dropped", "Gemini contents have no author name"),
    (
        "system messages",
        "all joined into systemInstruction, in order; images dropped",
        "Gemini has one text-only system instruction, not system turns",
    ),
    (
        "consecutive turns of one role",
        "merged into one content",
        "Gemini expects turns to alternate, and all results of a parallel call in one user turn",
    ),
    ("empty text parts", "dropped", "Gemini rejects empty text parts in requests"),
    ("ImagePart.detail", "dropped", "no per-image detail in generateContent"),
    (
        "ImagePart url (http/https)",
        "sent as fileData.fileUri, mimeType guessed from the path (image/jpeg if unknown)",
        "the gateway does not download images; older models "
        "and Vertex take only Files-API, gs:// or YouTube URIs and answer 400",
    ),
    ("ImagePart data without media_type", "mimeType image/png", "inlineData needs one"),
    (
        "ToolCallPart.id / ToolResultPart.tool_call_id",
        "not sent; results are paired with "
        "calls by function name (looked up from the call id) and order",
        "functionCall.id is rejected by Vertex and older endpoints",
    ),
    (
        "ToolCallPart.arguments",
        "parsed into args; not a JSON object -> {}",
        "args is a protobuf Struct",
    ),
    (
        "ToolCallPart.signature missing",
        "an unsigned first call of a model turn gets SKIP_SIGNATURE",
        "Gemini 3 rejects an unsigned first function call of a step",
    ),
    (
        "ToolResultPart.content",
        "texts joined into response {'output': ...} ({'error': ...} "
        "if is_error); images follow as inlineData/fileData parts of the same user turn",
        "multimodal functionResponse.parts is Gemini 3 only",
    ),
    (
        "ReasoningPart.text",
        "dropped (except as carrier of an otherwise homeless signature)",
        "thought summaries are output only; the signature holds the reasoning state",
    ),
    ("ReasoningPart without signature", "dropped", "nothing for Gemini to resume from"),
    ("ReasoningPart.redacted", "dropped", "Anthropic redacted thinking; Gemini cannot read it"),
    (
        "ImagePart in assistant messages",
        "sent as inlineData/fileData",
        "model turns may hold images (image models)",
    ),
    (
        "response: 2nd text/thought signature of a choice",
        "dropped by the decoder",
        "the fold concatenates signatures; Gemini sends one per answer",
    ),
    (
        "response: inlineData / executableCode / codeExecutionResult parts",
        "dropped",
        "no canonical event; the gateway never enables code execution or image output",
    ),
    (
        "response: finishMessage, safetyRatings, citationMetadata, groundingMetadata",
        "dropped",
        "no canonical slot",
    ),
    ("response: toolUsePromptTokenCount", "not counted", "only built-in tools use it"),
]
"""Every field dropped or adjusted on purpose: (field, what happens, why)."""


# --- client side (the body decoder is request.py, the encoders egress.py) -------------


def stream_encoder(request: ChatRequest, model: str, tally: Tally) -> GeminiStreamEncoder:
    """Canonical events -> ``streamGenerateContent`` chunks named ``model``."""
    return GeminiStreamEncoder(model, tally)


def passthrough(request: ChatRequest, model: str, tally: Tally) -> GeminiPassthrough:
    """A Gemini upstream's chunks, forwarded as written (``modelVersion`` rewritten)."""
    return GeminiPassthrough(model, tally)


# --- url, headers -------------------------------------------------------------------


def url(base_url: str, model: str, stream: bool) -> str:
    """``{base}/models/{model}:streamGenerateContent?alt=sse`` (or ``:generateContent``)."""
    base = base_url.rstrip("/")
    if model.startswith("models/"):
        model = model[len("models/") :]
    if stream:
        return f"{base}/models/{model}:streamGenerateContent?alt=sse"
    return f"{base}/models/{model}:generateContent"


def headers(api_key: str | None) -> dict[str, str]:
    """The key goes in ``x-goog-api-key``, never in the URL (URLs end up in logs)."""
    return {"x-goog-api-key": api_key} if api_key else {}


# --- request ------------------------------------------------------------------------


def _image(part: ImagePart) -> dict[str, Any]:
    if part.data is not None:
        return {"inlineData": {"mimeType": part.media_type or "image/png", "data": part.data}}
    link = part.url or ""
    if link.startswith("data:") and ";base64," in link:
        media_type, _, data = link[5:].partition(";base64,")
        return {"inlineData": {"mimeType": media_type or "image/png", "data": data}}
    mime = part.media_type or mimetypes.guess_type(urlsplit(link).path)[0] or "image/jpeg"
    return {"fileData": {"mimeType": mime, "fileUri": link}}


def _args(arguments: str) -> dict[str, Any]:
    if not arguments.strip():
        return {}
    try:
        value = _json_decode(arguments)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _user_parts(parts: list[Part]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, TextPart):
            if p.text:
                out.append({"text": p.text})
        elif isinstance(p, ImagePart):
            out.append(_image(p))
    return out


def _model_parts(parts: list[Part], names: dict[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any] | None] = []
    # A signed reasoning part is first written as a thought part; the next text part
    # takes its signature over and the thought part is struck out (None).
    carrier: tuple[int, str] | None = None
    for p in parts:
        if isinstance(p, ReasoningPart):
            if p.signature:
                carrier = (len(out), p.signature)
                out.append({"text": p.text, "thought": True, "thoughtSignature": p.signature})
        elif isinstance(p, TextPart):
            if not p.text:
                continue
            wire: dict[str, Any] = {"text": p.text}
            if carrier is not None:
                out[carrier[0]] = None
                wire["thoughtSignature"] = carrier[1]
                carrier = None
            out.append(wire)
        elif isinstance(p, ToolCallPart):
            names[p.id] = p.name
            wire = {"functionCall": {"name": p.name, "args": _args(p.arguments)}}
            if p.signature:
                wire["thoughtSignature"] = p.signature
            out.append(wire)
        elif isinstance(p, ImagePart):
            out.append(_image(p))
    result = [w for w in out if w is not None]
    first_call = next((w for w in result if "functionCall" in w), None)
    if first_call is not None:
        first_call.setdefault("thoughtSignature", SKIP_SIGNATURE)
    return result


def _result_parts(parts: list[Part], names: dict[str, str], i: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in parts:
        if not isinstance(p, ToolResultPart):
            continue
        function = p.name or names.get(p.tool_call_id)
        if not function:
            raise GatewayError(
                "invalid_request",
                f"tool result {p.tool_call_id!r} answers no earlier tool call",
                code="invalid_value",
                param=f"messages[{i}]",
            )
        text = "".join(c.text for c in p.content if isinstance(c, TextPart))
        response = {"error" if p.is_error else "output": text}
        out.append({"functionResponse": {"name": function, "response": response}})
        out.extend(_image(c) for c in p.content if isinstance(c, ImagePart))
    return out


def _contents(messages: list[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name, for functionResponse
    for i, m in enumerate(messages):
        if m.role == "system":
            system.extend({"text": p.text} for p in m.parts if isinstance(p, TextPart) and p.text)
            continue
        if m.role == "assistant":
            role, parts = "model", _model_parts(m.parts, names)
        elif m.role == "tool":
            role, parts = "user", _result_parts(m.parts, names, i)
        else:
            role, parts = "user", _user_parts(m.parts)
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return system, contents


def _declaration(tool: Tool) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": tool.name}
    if tool.description:
        declaration["description"] = tool.description
    parameters = gemini_schema(tool.parameters)
    if parameters.get("properties"):
        declaration["parameters"] = parameters
    return declaration


def _tool_config(choice: str) -> dict[str, Any]:
    mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}.get(choice)
    config: dict[str, Any] = {"mode": mode or "ANY"}
    if mode is None:
        config["allowedFunctionNames"] = [choice]
    return {"functionCallingConfig": config}


def _generation_config(request: ChatRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.stop:
        config["stopSequences"] = request.stop[:_MAX_STOP]
    if request.seed is not None:
        config["seed"] = request.seed
    if request.n is not None and request.n > 1:
        config["candidateCount"] = request.n
    for key, wire in (
        ("top_k", "topK"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        value = request.extra.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            config[wire] = value
    fmt = request.response_format or {}
    if fmt.get("type") == "json_object":
        config["responseMimeType"] = "application/json"
    elif fmt.get("type") == "json_schema":
        config["responseMimeType"] = "application/json"
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            config["responseSchema"] = gemini_schema(schema)
    budget = request.reasoning_budget
    if budget is None and request.reasoning_effort is not None:
        budget = REASONING_BUDGETS.get(request.reasoning_effort.lower())
    if budget is not None:
        thinking: dict[str, Any] = {"thinkingBudget": budget}
        if budget != 0:
            thinking["includeThoughts"] = True
        config["thinkingConfig"] = thinking
    return config


def encode_request(request: ChatRequest, model: str) -> dict[str, Any]:
    """The ``GenerateContentRequest`` body for ``request`` (the model is in the URL).
    A request that arrived in this protocol is forwarded as the client wrote it.
    Raises ``GatewayError`` (invalid_request) for a tool result that answers no call."""
    source = request.source
    if source is not None and source.protocol == name:
        return dict(source.body)
    system, contents = _contents(request.messages)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if request.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t) for t in request.tools]}]
        if request.tool_choice is not None:
            body["toolConfig"] = _tool_config(request.tool_choice)
    config = _generation_config(request)
    if config:
        body["generationConfig"] = config
    return body


# --- responses and errors -----------------------------------------------------------


def stream_decoder() -> GeminiStreamDecoder:
    """A fresh decoder for one ``streamGenerateContent?alt=sse`` body."""
    return GeminiStreamDecoder()


def decode_response(body: bytes) -> list[Event]:
    """A non-streaming ``generateContent`` body as the events of a one-frame stream."""
    decoder = GeminiStreamDecoder()
    events = decoder.feed(ServerSentEvent(body.decode("utf-8", "replace")))
    return events + decoder.close()


def _retry_after(error: Any) -> str | None:
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return str(math.ceil(float(delay[:-1])))
            except ValueError:
                return None
    return None


def decode_error(status: int, body: bytes) -> GatewayError:
    """An upstream error response ``{"error": {"code", "message", "status"}}`` (or a
    one-element array of it) as a ``GatewayError`` with the HTTP status, Google's
    message and its status word as ``code``; ``RetryInfo.retryDelay`` -> Retry-After."""
    try:
        data = _json_decode(body)
    except msgspec.DecodeError:
        data = None
    if isinstance(data, list) and data:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    message, _, word = error_from_wire(error)
    if not message:
        message = (
            body[:500].decode("utf-8", "replace").strip() or f"upstream returned HTTP {status}"
        )
    gateway_error = GatewayError(kind_for_status(status), message, status=status, code=word)
    if isinstance(error, dict) and isinstance(data, dict):
        gateway_error.upstream = (name, data)  # a Gemini client gets this body as it came
    retry = _retry_after(error)
    if retry is not None:
        gateway_error.headers["Retry-After"] = retry
    return gateway_error
