"""Anthropic Messages requests, upstream side: ``ChatRequest`` -> a wire body.

A request that arrived in this protocol is forwarded as the client wrote it
(``source``). Any other is translated from the canon, and the translation is lossy
where Anthropic cannot express a field: every such case is in ``ADJUSTMENTS``, never
silent.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from ...events import (
    ChatRequest,
    GatewayError,
    ImagePart,
    Message,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from ..cache_hints import cache_control
from .wire import name

_json_decode = msgspec.json.decode

DEFAULT_MAX_TOKENS = 4096
"""``max_tokens`` is required by Anthropic; the canon may have none (an OpenAI client
need not say). 4096 is enough for a long answer from every Claude model and under every
model's output limit. With thinking on it is added on top of the thinking budget."""

MIN_THINKING_BUDGET = 1024
"""Anthropic rejects ``thinking.budget_tokens`` below this."""

EFFORT_BUDGET: dict[str, int] = {
    "minimal": 1024,
    "low": 1024,
    "medium": 4096,
    "high": 16384,
    "xhigh": 32768,
}
"""``reasoning_effort`` -> ``thinking.budget_tokens``; ``"none"`` turns thinking off."""


class Adjustment(NamedTuple):
    field: str
    action: str
    why: str


ADJUSTMENTS: tuple[Adjustment, ...] = (
    Adjustment("temperature > 1", "sent as 1.0", "Anthropic's range is 0..1 (OpenAI's 0..2)"),
    Adjustment(
        "top_p with temperature",
        "top_p dropped",
        "recent Claude models reject both together; temperature is the more common knob",
    ),
    Adjustment(
        "temperature, top_p < 0.95 with thinking",
        "dropped",
        "Anthropic rejects sampling changes while extended thinking is on",
    ),
    Adjustment("max_tokens unset", f"{DEFAULT_MAX_TOKENS} (+ the thinking budget)", "required"),
    Adjustment(
        "reasoning_effort",
        "thinking.budget_tokens from EFFORT_BUDGET; 'none' -> no thinking; others -> 400",
        "Anthropic takes a token budget",
    ),
    Adjustment(
        "reasoning_budget",
        f"<= 0 -> no thinking; else at least {MIN_THINKING_BUDGET}, at most max_tokens - 1;"
        f" no thinking if max_tokens leaves less than {MIN_THINKING_BUDGET}",
        "Anthropic's minimum budget; the budget counts toward max_tokens and must be below it",
    ),
    Adjustment("n > 1", "rejected (400, param n)", "Anthropic returns one answer"),
    Adjustment("seed", "dropped", "no equivalent"),
    Adjustment(
        "response_format json_schema",
        "output_config.format {type: json_schema, schema}; the schema's name is dropped",
        "Anthropic structured outputs have no name",
    ),
    Adjustment("response_format json_object", "dropped", "no schema-less JSON mode"),
    Adjustment(
        "extra (logit_bias, logprobs, penalties, ...)",
        "dropped",
        "fields of another protocol mean nothing to Anthropic",
    ),
    Adjustment(
        "system messages after the first turn",
        "hoisted, in order, into the top-level system",
        "Anthropic has a system prompt, not system turns",
    ),
    Adjustment("images in system messages", "dropped", "Anthropic's system is text only"),
    Adjustment(
        "prompt_cache_key, prompt_cache_retention",
        "dropped (prompt_cache_key still keeps the conversation on one deployment)",
        "Anthropic caches by cache_control, not by key",
    ),
    Adjustment(
        "cache hints on text parts (cache_control on OpenAI / Responses content parts)",
        "cache_control {type: ephemeral} on the text block (ttl 1h kept); such a system"
        " prompt is sent as blocks",
        "Anthropic caches only what is marked; the hint is its own shape",
    ),
    Adjustment(
        "consecutive turns of one role",
        "merged into one turn; tool results become tool_result blocks of a user turn",
        "Anthropic needs user/assistant alternation",
    ),
    Adjustment("empty text parts, empty turns", "dropped", "Anthropic rejects empty text"),
    Adjustment("Message.name, ToolResultPart.name", "dropped", "no equivalent"),
    Adjustment("ImagePart.detail", "dropped", "no equivalent"),
    Adjustment("ImagePart data without media_type", "sent as image/png", "required"),
    Adjustment("ToolCallPart.signature", "dropped", "Gemini-only opaque data"),
    Adjustment(
        "reasoning without signature or redacted data",
        "dropped",
        "Anthropic accepts thinking blocks only with the signature it issued",
    ),
    Adjustment("Tool.parameters empty", "input_schema {type: object, properties: {}}", "required"),
    Adjustment(
        "parallel_tool_calls false",
        "tool_choice.disable_parallel_tool_use (tool_choice auto if unset; dropped with none)",
        "Anthropic puts it on tool_choice",
    ),
    Adjustment("parallel_tool_calls true", "dropped", "the default"),
    Adjustment(
        "tool_choice required or named, with thinking",
        "sent as is",
        "Anthropic rejects forced tool use with thinking; its 400 is the honest answer",
    ),
    Adjustment(
        "ToolCallPart.arguments not a JSON object",
        "rejected (400, param messages[i].tool_calls); empty -> {}",
        "tool_use.input must be an object",
    ),
    Adjustment("include_usage", "dropped", "Anthropic always reports usage (message_start/_delta)"),
    Adjustment(
        "same protocol: thinking blocks without a signature",
        "removed from the forwarded body",
        "written by our encoder for another provider's reasoning; Anthropic rejects them",
    ),
    Adjustment(
        "client side: document, search_result, server-tool blocks and tools, image file ids",
        "kept for an Anthropic upstream (source); left out of the canon",
        "the canon has no part for them",
    ),
    Adjustment(
        "client side: a system message inside messages (mid-conversation-system beta)",
        "a canonical system message where it stands (OpenAI: a system message there;"
        " Gemini and Anthropic targets: into the system instruction, in order)",
        "Claude Code 2.1 sends one after the last user turn",
    ),
    Adjustment(
        "client side: thinking adaptive, output_config.effort",
        "reasoning_effort (max -> xhigh); adaptive without effort: the target's default;"
        " disabled: none set",
        "OpenAI takes an effort, Gemini a budget (its EFFORT table), both from it",
    ),
    Adjustment(
        "client side: cache_control on blocks, system and tools; top-level cache_control",
        "kept for an Anthropic upstream; dropped for others",
        "OpenAI and Gemini cache prompts by themselves, with no per-block hint",
    ),
    Adjustment(
        "client side: context_management, mcp_servers, container, speed, service_tier",
        "kept for an Anthropic upstream; dropped for others (extra)",
        "server-side features of Anthropic's API",
    ),
    Adjustment(
        "client side: output_config.format, output_format (older beta)",
        "response_format json_schema",
        "structured output has a counterpart everywhere",
    ),
    Adjustment(
        "client side: a body the canon cannot read (a field of the wrong shape)",
        "relayed as written to an Anthropic upstream, which judges it;"
        " a 400 naming the field for any other",
        "validation at the door is only what the gateway needs: JSON, model, auth, size",
    ),
)
"""What ``encode_request`` does with canonical fields Anthropic cannot take as they are
(and, last, what ``decode_request`` leaves out of the canon)."""


def _invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError("invalid_request", message, param=param)


def _wire_image(part: ImagePart) -> dict[str, Any]:
    if part.url is not None:
        return {"type": "image", "source": {"type": "url", "url": part.url}}
    source = {"type": "base64", "media_type": part.media_type or "image/png", "data": part.data}
    return {"type": "image", "source": source}


def _wire_parts(parts: list[TextPart | ImagePart]) -> list[dict[str, Any]]:
    return [
        {"type": "text", "text": p.text} if isinstance(p, TextPart) else _wire_image(p)
        for p in parts
        if not isinstance(p, TextPart) or p.text
    ]


def _tool_input(part: ToolCallPart, i: int) -> dict[str, Any]:
    if not part.arguments.strip():
        return {}
    param = f"messages[{i}].tool_calls"
    try:
        value = _json_decode(part.arguments)
    except msgspec.DecodeError:
        raise _invalid(
            f"messages[{i}]: the arguments of tool call {part.id!r} are not valid JSON", param
        ) from None
    if not isinstance(value, dict):
        raise _invalid(
            f"messages[{i}]: the arguments of tool call {part.id!r} must be a JSON object", param
        )
    return value


def _wire_blocks(message: Message, i: int) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for p in message.parts:
        if isinstance(p, TextPart):
            if p.text:
                blocks.append(_text_block(p))
        elif isinstance(p, ImagePart):
            blocks.append(_wire_image(p))
        elif isinstance(p, ToolCallPart):
            blocks.append(
                {"type": "tool_use", "id": p.id, "name": p.name, "input": _tool_input(p, i)}
            )
        elif isinstance(p, ToolResultPart):
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": p.tool_call_id}
            content = _wire_parts(p.content)
            if len(content) == 1 and content[0]["type"] == "text":
                result["content"] = content[0]["text"]
            elif content:
                result["content"] = content
            if p.is_error:
                result["is_error"] = True
            blocks.append(result)
        elif isinstance(p, ReasoningPart):
            if p.signature:
                blocks.append({"type": "thinking", "thinking": p.text, "signature": p.signature})
            if p.redacted:
                blocks.append({"type": "redacted_thinking", "data": p.redacted})
    return blocks


def _text_block(part: TextPart) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": part.text}
    if part.cache is not None:
        block["cache_control"] = cache_control(part.cache)
    return block


def _wire_messages(
    messages: list[Message],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(turns, system text blocks): roles alternate, tool results ride in user turns."""
    turns: list[dict[str, Any]] = []
    system: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if m.role == "system":
            system.extend(_text_block(p) for p in m.parts if isinstance(p, TextPart) and p.text)
            continue
        blocks = _wire_blocks(m, i)
        if not blocks:
            continue
        role = "assistant" if m.role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:  # the common one-text-block turn as a plain string
        content = turn["content"]
        if len(content) == 1 and content[0]["type"] == "text" and len(content[0]) == 2:
            turn["content"] = content[0]["text"]  # (no cache_control to keep)
    return turns, system


def _thinking_budget(request: ChatRequest) -> int | None:
    budget = request.reasoning_budget
    effort = request.reasoning_effort
    if budget is None and effort is not None and effort != "none":
        budget = EFFORT_BUDGET.get(effort)
        if budget is None:
            raise _invalid(
                f"reasoning_effort: {effort!r} is not one of {', '.join(EFFORT_BUDGET)}, none",
                "reasoning_effort",
            )
    if budget is None or budget <= 0:
        return None
    budget = max(budget, MIN_THINKING_BUDGET)
    if request.max_tokens is not None:
        budget = min(budget, request.max_tokens - 1)
    return budget if budget >= MIN_THINKING_BUDGET else None


def _wire_tool_choice(request: ChatRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    if choice is None and request.parallel_tool_calls is False:
        choice = "auto"
    if choice is None:
        return None
    if choice in ("auto", "none"):
        wire: dict[str, Any] = {"type": choice}
    elif choice == "required":
        wire = {"type": "any"}
    else:
        wire = {"type": "tool", "name": choice}
    if request.parallel_tool_calls is False and choice != "none":
        wire["disable_parallel_tool_use"] = True
    return wire


def _translate(request: ChatRequest) -> dict[str, Any]:
    """The canon as a Messages body, by ``ADJUSTMENTS``."""
    if request.n is not None and request.n > 1:
        raise _invalid("n: an Anthropic upstream returns one answer; n must be 1", "n")
    turns, system = _wire_messages(request.messages)
    body: dict[str, Any] = {"messages": turns}
    if system:
        body["system"] = system[0]["text"] if len(system) == 1 and len(system[0]) == 2 else system
    budget = _thinking_budget(request)
    max_tokens = request.max_tokens
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS + (budget or 0)
    body["max_tokens"] = max_tokens
    if budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    temperature, top_p = request.temperature, request.top_p
    if budget is not None:
        temperature = None
        top_p = top_p if top_p is not None and top_p >= 0.95 else None
    if temperature is not None:
        body["temperature"] = min(temperature, 1.0)
        top_p = None
    if top_p is not None:
        body["top_p"] = top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.tools is not None:
        body["tools"] = [
            {
                "name": t.name,
                **({"description": t.description} if t.description is not None else {}),
                "input_schema": t.parameters or {"type": "object", "properties": {}},
                **({"strict": t.strict} if t.strict is not None else {}),
            }
            for t in request.tools
        ]
    choice = _wire_tool_choice(request)
    if choice is not None:
        body["tool_choice"] = choice
    fmt = request.response_format
    if fmt and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    if request.user:
        body["metadata"] = {"user_id": request.user}
    return body


def _unsigned(block: Any) -> bool:
    return (
        isinstance(block, dict) and block.get("type") == "thinking" and not block.get("signature")
    )


def _without_unsigned_thinking(turns: list[Any]) -> list[Any]:
    """The client's turns without thinking blocks that have no signature: our encoder
    writes those when the reasoning came from another provider, and Anthropic would
    reject them if a client sends them back (a fallback, a switched model). The list
    is copied only when there is something to remove."""
    out = turns
    for i, turn in enumerate(turns):
        content = turn.get("content") if isinstance(turn, dict) else None
        if isinstance(content, list) and any(_unsigned(b) for b in content):
            if out is turns:
                out = list(turns)
            out[i] = {**turn, "content": [b for b in content if not _unsigned(b)]}
    return out


def encode_request(request: ChatRequest, model: str) -> dict[str, Any]:
    """The body to send an Anthropic upstream, always streamed. A request that arrived
    in this protocol is forwarded as the client wrote it, model and stream patched;
    any other is translated from the canon (see ``ADJUSTMENTS``)."""
    source = request.source
    if source is not None and source.protocol == name:
        body = dict(source.body)
        if isinstance(body.get("messages"), list):  # (the upstream judges any other)
            body["messages"] = _without_unsigned_thinking(body["messages"])
    else:
        body = _translate(request)
    body["model"] = model
    body["stream"] = True
    return body
