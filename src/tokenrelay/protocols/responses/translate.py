"""The Responses API as an upstream: a canonical request as a ``POST /responses`` body,
and the table of what this wire cannot carry (dropped or adjusted on purpose).

The gateway calls it stateless: ``store: false``, and ``include:
["reasoning.encrypted_content"]`` when the request asks for reasoning (or carries signed
reasoning), so reasoning comes back encrypted in the stream and round-trips through any
client as the canonical reasoning signature, without state on either side. A request that arrived in this protocol is forwarded as the client wrote
it, ``model`` and ``stream`` set.
"""

from __future__ import annotations

from typing import Any

from ...events import (
    ChatRequest,
    ImagePart,
    Message,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from ..cache_hints import OPENAI_FIELDS
from ..openai.translate import effort_for_budget
from .wire import ENCRYPTED, name

# What the Responses wire cannot carry, dropped or adjusted on purpose, in both
# directions: a Responses client's request translated for another upstream (what the
# canon has no slot for), and a canonical request sent to a Responses upstream.
# (field, what happens, why)
DROPPED: tuple[tuple[str, str, str], ...] = (
    (
        "built-in tools (web_search, file_search, code_interpreter, computer_use, mcp, "
        "image_generation, local_shell, ...) and their items in input",
        "dropped for other upstreams; a Responses upstream gets them as written",
        "only OpenAI runs them; no other protocol has a slot for them",
    ),
    (
        "custom (free-form) tools and custom_tool_call items",
        "sent to other upstreams as a function tool taking one string, 'input'",
        "keeps the tool callable wherever function tools exist",
    ),
    (
        "tool_choice allowed_tools or a built-in tool",
        "omitted for other upstreams (their default applies)",
        "other protocols can only name one function",
    ),
    (
        "input_file, input_audio parts and file_id images",
        "dropped for other upstreams",
        "they name OpenAI-side files or formats the canon does not carry",
    ),
    (
        "reasoning.summary, include, metadata, truncation",
        "dropped for other upstreams",
        "OpenAI-side options mean nothing there",
    ),
    (
        "store, previous_response_id",
        "kept by the gateway for every upstream; a Responses upstream gets store: false",
        "the history is put in the input (state.py), so it continues on any upstream",
    ),
    (
        "redacted reasoning (Anthropic redacted_thinking) to a Responses client",
        "not sent",
        "a reasoning item has one encrypted_content slot, taken by the signature",
    ),
    (
        "encrypted_content to a Responses client",
        "sent only when include has reasoning.encrypted_content (always in a "
        "non-streaming body, which cannot see include)",
        "the API's own rule; the signature is needed to continue the turn",
    ),
    ("stop, seed, n", "dropped for a Responses upstream", "the Responses API has none of them"),
    (
        "max_tokens below 16",
        "sent as max_output_tokens as it is (OpenAI answers 400 below 16, verbatim)",
        "raising it would give more tokens than asked; other servers have no minimum",
    ),
    (
        "Tool.strict None",
        "sent as strict: false",
        "Responses makes function tools strict by default, which rejects ordinary schemas",
    ),
    (
        "reasoning_effort / reasoning_budget",
        "reasoning: {effort, summary: auto}; a budget as effort (<=2048 low, <=8192 "
        "medium, else high)",
        "Responses sets reasoning by effort; summaries make the thinking visible",
    ),
    (
        "ReasoningPart without signature in history",
        "not sent to a Responses upstream",
        "a reasoning input item is only meaningful with its encrypted_content",
    ),
    (
        "ToolResultPart images, is_error, name",
        "sent as the output text only",
        "function_call_output is matched by call_id",
    ),
    (
        "system messages",
        "the leading ones as instructions, later ones as developer messages",
        "the Responses places for them",
    ),
    (
        "store",
        "false; include: [reasoning.encrypted_content] when the request asks for "
        "reasoning or carries signed reasoning",
        "the gateway is stateless towards its upstreams; OpenAI refuses that include "
        "for models that do not reason",
    ),
    (
        "TextPart.cache (cache_control hints)",
        "dropped",
        "this provider caches every prompt by itself, with no per-part hint",
    ),
    ("extra (fields of another protocol)", "dropped", "they mean nothing on this wire"),
)


def _user_content(parts: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, TextPart):
            out.append({"type": "input_text", "text": p.text})
        elif isinstance(p, ImagePart):
            url = p.url or f"data:{p.media_type or 'image/png'};base64,{p.data}"
            out.append({"type": "input_image", "image_url": url, "detail": p.detail or "auto"})
    return out


def _text(parts: list[Any]) -> str:
    return "".join(p.text for p in parts if isinstance(p, TextPart))


def wire_input(messages: list[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """(instructions, input items) for canonical messages."""
    leading: list[str] = []
    items: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            if not items:
                leading.append(_text(m.parts))
            else:
                items.append({"role": "developer", "content": _user_content(m.parts)})
        elif m.role == "user":
            items.append({"role": "user", "content": _user_content(m.parts)})
        elif m.role == "tool":
            for p in m.parts:
                if isinstance(p, ToolResultPart):
                    items.append(
                        {
                            "type": "function_call_output",
                            "call_id": p.tool_call_id,
                            "output": _text(p.content),
                        }
                    )
        else:
            text: list[str] = []
            for p in m.parts:
                if isinstance(p, ReasoningPart) and p.signature:
                    summary = [{"type": "summary_text", "text": p.text}] if p.text else []
                    items.append(
                        {"type": "reasoning", "summary": summary, "encrypted_content": p.signature}
                    )
                elif isinstance(p, TextPart):
                    text.append(p.text)
                elif isinstance(p, ToolCallPart):
                    if text:
                        items.append(_assistant("".join(text)))
                        text = []
                    items.append(
                        {
                            "type": "function_call",
                            "call_id": p.id,
                            "name": p.name,
                            "arguments": p.arguments,
                        }
                    )
            if text:
                items.append(_assistant("".join(text)))
    return ("\n\n".join(leading) if leading else None), items


def _assistant(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text}],
    }


def _text_format(fmt: dict[str, Any]) -> dict[str, Any] | None:
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        schema = fmt.get("json_schema") or {}
        out: dict[str, Any] = {"type": "json_schema", "name": schema.get("name", "response")}
        for key in ("description", "schema", "strict"):
            if key in schema:
                out[key] = schema[key]
        return out
    return None


def encode_request(request: ChatRequest, model: str) -> dict[str, Any]:
    """The body to send a Responses upstream (always streamed)."""
    source = request.source
    if source is not None and source.protocol == name:
        body = dict(source.body)
        # The state is the gateway's (state.py): the history of previous_response_id is
        # in the input already, background runs here, and the upstream keeps nothing.
        body.pop("previous_response_id", None)
        body.pop("background", None)
        body["store"] = False
    else:
        instructions, items = wire_input(request.messages)
        body = {"input": items}
        if instructions is not None:
            body["instructions"] = instructions
        if request.max_tokens is not None:
            body["max_output_tokens"] = request.max_tokens
        for key in ("temperature", "top_p", "parallel_tool_calls", "user", *OPENAI_FIELDS):
            value = getattr(request, key)
            if value is not None:
                body[key] = value
        effort = request.reasoning_effort
        if effort is None and request.reasoning_budget:
            effort = effort_for_budget(request.reasoning_budget)
        if effort is not None:
            body["reasoning"] = {"effort": effort, "summary": "auto"}
        if request.response_format is not None:
            fmt = _text_format(request.response_format)
            if fmt is not None:
                body["text"] = {"format": fmt}
        if request.tools is not None:
            body["tools"] = [
                {
                    "type": "function",
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters or {"type": "object", "properties": {}},
                    "strict": bool(t.strict),
                }
                for t in request.tools
            ]
        if request.tool_choice is not None:
            choice = request.tool_choice
            body["tool_choice"] = (
                choice
                if choice in ("auto", "none", "required")
                else {"type": "function", "name": choice}
            )
        body["store"] = False
        signed = any(
            isinstance(p, ReasoningPart) and p.signature for m in request.messages for p in m.parts
        )
        if effort is not None or signed:
            body["include"] = [ENCRYPTED]
    body["model"] = model
    body["stream"] = True
    return body
