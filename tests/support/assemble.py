"""What a stream holds, assembled three ways, for comparing them:

- ``recorded(path)``: what a recorded provider stream holds, by walking its raw JSON
  (no tokenrelay code involved): text, reasoning, signatures, tool calls, the stop word
  in the provider's own vocabulary, and the usage counted the OpenAI way (input includes
  cached and cache-written tokens, output includes reasoning tokens; Gemini's
  ``usageMetadata`` is a running total repeated on every frame, so it is taken once);
- ``openai_chunks`` / ``openai_completion``: what an ``openai`` SDK client received;
- ``anthropic_events`` / ``anthropic_message``: what an ``anthropic`` SDK client
  received (raw stream events or the final message).

All three produce an ``Answer``; ``expect_openai`` / ``expect_anthropic`` turn a
recording into the ``Answer`` each client should see through the gateway.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# --- stop words ------------------------------------------------------------------------
# The test's own statement of the mapping; tests check that the codecs' tables agree.

TO_CANON: dict[str, dict[str, str]] = {
    "openai": {
        "stop": "stop",
        "length": "length",
        "tool_calls": "tool_calls",
        "content_filter": "content_filter",
    },
    "anthropic": {
        "end_turn": "stop",
        "stop_sequence": "stop",
        "max_tokens": "length",
        "tool_use": "tool_calls",
        "refusal": "content_filter",
    },
    "gemini": {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter"},
    "responses": {
        "completed": "stop",
        "max_output_tokens": "length",
        "content_filter": "content_filter",
    },
}
CANON_TO_OPENAI = {w: w for w in ("stop", "length", "tool_calls", "content_filter")}
CANON_TO_ANTHROPIC = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}

CHARS_PER_TOKEN = 4  # the gateway's documented estimate when an upstream counts nothing


@dataclass
class Call:
    id: str | None  # None: the wire gives none (Gemini); the gateway then makes one up
    name: str
    input: dict[str, Any]
    signature: str | None = None


@dataclass
class Usage:
    """Counted the OpenAI way (see the module docstring)."""

    input: int = 0
    output: int = 0
    cached: int = 0
    reasoning: int = 0
    cache_write: int = 0


@dataclass
class Recorded:
    wire: str  # openai | anthropic | gemini | responses
    text: str = ""
    reasoning: str = ""
    signature: str | None = None  # Anthropic signature_delta / Gemini text-part signature
    text_signatures: list[str] = field(default_factory=list)  # Gemini: every one seen
    calls: list[Call] = field(default_factory=list)
    stop: str | None = None  # in the wire's own words
    usage: Usage | None = None
    error: str | None = None

    @property
    def canonical_stop(self) -> str | None:
        if self.stop is None:
            return None
        canon = TO_CANON[self.wire][self.stop]
        if self.wire in ("gemini", "responses") and canon == "stop" and self.calls:
            canon = "tool_calls"  # Gemini says STOP after function calls, Responses completed
        return canon


@dataclass
class Answer:
    """What a client saw, in its own protocol's words."""

    text: str = ""
    reasoning: str = ""
    signature: str | None = None
    calls: list[Call] = field(default_factory=list)
    stop: str | None = None
    stop_sequence: str | None = None  # Anthropic's: which stop sequence ended it
    usage: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


# --- recordings -------------------------------------------------------------------------


def wire_of(path: Path) -> str:
    if path.name.startswith("responses_"):
        return "responses"
    return {"anthropic": "anthropic", "gemini": "gemini"}.get(path.parent.name, "openai")


def payloads(path: Path) -> list[tuple[str | None, Any]]:
    """(event name, JSON payload) of every event with data, ``[DONE]`` left out."""
    out: list[tuple[str | None, Any]] = []
    text = path.read_bytes().decode().replace("\r\n", "\n")
    for block in text.split("\n\n"):
        lines = block.split("\n")
        data = "\n".join(line[5:].removeprefix(" ") for line in lines if line.startswith("data:"))
        names = [line[6:].strip() for line in lines if line.startswith("event:")]
        if data and data != "[DONE]":
            out.append((names[-1] if names else None, json.loads(data)))
    return out


def recorded(path: Path) -> Recorded:
    wire = wire_of(path)
    rec = Recorded(wire)
    events = payloads(path)
    if wire == "anthropic":
        _anthropic(rec, events)
    elif wire == "gemini":
        _gemini(rec, events)
    elif wire == "responses":
        from .responses_assemble import walk_recording

        walk_recording(rec, events)
    else:
        _openai(rec, events)
    return rec


def _openai(rec: Recorded, events: list[tuple[str | None, Any]]) -> None:
    calls: dict[int, dict[str, Any]] = {}
    for _, chunk in events:
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            rec.text += delta.get("content") or ""
            rec.reasoning += delta.get("reasoning_content") or delta.get("reasoning") or ""
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(call["index"], {"id": None, "name": "", "args": ""})
                slot["id"] = call.get("id") or slot["id"]
                fn = call.get("function") or {}
                slot["name"] = fn.get("name") or slot["name"]
                slot["args"] += fn.get("arguments") or ""
            if choice.get("finish_reason") and rec.stop is None:
                rec.stop = choice["finish_reason"]
        usage = chunk.get("usage")
        if usage:
            prompt = usage.get("prompt_tokens_details") or {}
            completion = usage.get("completion_tokens_details") or {}
            rec.usage = Usage(
                input=usage["prompt_tokens"],
                output=usage["completion_tokens"],
                cached=prompt.get("cached_tokens") or 0,
                reasoning=completion.get("reasoning_tokens") or 0,
            )
        if chunk.get("error"):
            rec.error = chunk["error"]["message"]
    rec.calls = [
        Call(c["id"], c["name"], json.loads(c["args"] or "{}")) for _, c in sorted(calls.items())
    ]


def _anthropic(rec: Recorded, events: list[tuple[str | None, Any]]) -> None:
    blocks: dict[int, dict[str, Any]] = {}
    fresh = read = written = output = 0
    signatures: list[str] = []
    for name, obj in events:
        kind = obj.get("type") or name
        if kind == "message_start":
            usage = obj["message"].get("usage") or {}
            fresh = usage.get("input_tokens", fresh)
            read = usage.get("cache_read_input_tokens") or 0
            written = usage.get("cache_creation_input_tokens") or 0
            output = usage.get("output_tokens", output)
        elif kind == "content_block_start":
            block = dict(obj["content_block"])
            block["json"] = ""
            blocks[obj["index"]] = block
            if block["type"] == "text":
                rec.text += block.get("text") or ""
            elif block["type"] == "thinking":
                rec.reasoning += block.get("thinking") or ""
                if block.get("signature"):
                    signatures.append(block["signature"])
        elif kind == "content_block_delta":
            delta = obj["delta"]
            block = blocks[obj["index"]]
            if delta["type"] == "text_delta":
                rec.text += delta["text"]
            elif delta["type"] == "thinking_delta":
                rec.reasoning += delta["thinking"]
            elif delta["type"] == "signature_delta":
                signatures.append(delta["signature"])
            elif delta["type"] == "input_json_delta":
                block["json"] += delta["partial_json"]
        elif kind == "message_delta":
            rec.stop = obj["delta"].get("stop_reason") or rec.stop
            usage = obj.get("usage") or {}
            fresh = usage.get("input_tokens", fresh)
            read = usage.get("cache_read_input_tokens", read) or 0
            written = usage.get("cache_creation_input_tokens", written) or 0
            output = usage.get("output_tokens", output)
        elif kind == "error":
            rec.error = obj["error"]["message"]
    for _, block in sorted(blocks.items()):
        if block["type"] == "tool_use":
            arguments = json.loads(block["json"]) if block["json"] else block.get("input", {})
            rec.calls.append(Call(block["id"], block["name"], arguments))
    rec.signature = "".join(signatures) or None
    rec.usage = Usage(fresh + read + written, output, read, 0, written)


def _gemini(rec: Recorded, events: list[tuple[str | None, Any]]) -> None:
    for _, chunk in events:
        if chunk.get("error"):
            rec.error = chunk["error"]["message"]
        meta = chunk.get("usageMetadata")
        if meta:  # a running total: the last one is the count
            thoughts = meta.get("thoughtsTokenCount") or 0
            rec.usage = Usage(
                input=meta.get("promptTokenCount") or 0,
                output=(meta.get("candidatesTokenCount") or 0) + thoughts,
                cached=meta.get("cachedContentTokenCount") or 0,
                reasoning=thoughts,
            )
        for candidate in chunk.get("candidates") or []:
            for part in (candidate.get("content") or {}).get("parts") or []:
                signature = part.get("thoughtSignature")
                if "functionCall" in part:
                    call = part["functionCall"]
                    rec.calls.append(
                        Call(call.get("id"), call["name"], call.get("args") or {}, signature)
                    )
                    continue
                if signature:
                    rec.text_signatures.append(signature)
                if part.get("thought"):
                    rec.reasoning += part.get("text") or ""
                else:
                    rec.text += part.get("text") or ""
            if candidate.get("finishReason"):
                rec.stop = candidate["finishReason"]
    rec.signature = rec.text_signatures[0] if rec.text_signatures else None


# --- what each client should see ---------------------------------------------------------


def estimate(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


def _chars(rec: Recorded) -> int:
    return len(rec.text) + len(rec.reasoning)


def expect_openai(rec: Recorded, prompt: str = "replay") -> Answer:
    """The recording as an OpenAI client sees it. Signatures have no slot on the OpenAI
    wire (``signature`` stays None); an upstream that counted nothing gets the
    gateway's estimate of the ``prompt`` sent and of what streamed, flagged
    ``estimated``."""
    answer = Answer(rec.text, rec.reasoning, None, rec.calls, error=rec.error)
    canon = rec.canonical_stop
    answer.stop = CANON_TO_OPENAI[canon] if canon else None
    if rec.usage is not None:
        u = rec.usage
        answer.usage = {
            "prompt_tokens": u.input,
            "completion_tokens": u.output,
            "total_tokens": u.input + u.output,
            "cached_tokens": u.cached,
            "reasoning_tokens": u.reasoning,
        }
    else:
        answer.usage = {
            "prompt_tokens": estimate(len(prompt)),
            "completion_tokens": estimate(_chars(rec)),
            "estimated": True,
        }
    return answer


def expect_anthropic(rec: Recorded, prompt: str = "replay") -> Answer:
    """The recording as an Anthropic client sees it: thinking with its signature (a
    Gemini text-part signature becomes the thinking block's), stop words by the table,
    ``input_tokens`` without the cached ones (Anthropic's convention), tool call ids as
    Anthropic writes them (``toolu_``, the upstream's id kept after it)."""
    calls = [
        replace(c, id=c.id if c.id.startswith("toolu_") else f"toolu_{c.id}") if c.id else c
        for c in rec.calls
    ]
    answer = Answer(rec.text, rec.reasoning, rec.signature, calls, error=rec.error)
    canon = rec.canonical_stop
    answer.stop = CANON_TO_ANTHROPIC[canon] if canon else None
    if rec.usage is not None:
        u = rec.usage
        answer.usage = {
            "input_tokens": u.input - u.cached - u.cache_write,
            "output_tokens": u.output,
            "cache_read_input_tokens": u.cached,
            "cache_creation_input_tokens": u.cache_write,
        }
    else:
        answer.usage = {
            "input_tokens": estimate(len(prompt)),
            "output_tokens": estimate(_chars(rec)),
        }
    return answer


# --- what a client received ---------------------------------------------------------------


def _openai_usage(usage: Any) -> dict[str, Any]:
    if usage is None:
        return {}
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    prompt, completion = usage.prompt_tokens_details, usage.completion_tokens_details
    out["cached_tokens"] = (prompt.cached_tokens if prompt is not None else 0) or 0
    out["reasoning_tokens"] = (completion.reasoning_tokens if completion is not None else 0) or 0
    if (usage.model_extra or {}).get("estimated"):
        out["estimated"] = True
    return out


def openai_chunks(chunks: list[Any], answer: Answer | None = None) -> Answer:
    """Assemble ``ChatCompletionChunk``s (choice 0) the way the SDK's own helpers do."""
    answer = answer or Answer()
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        if chunk.usage is not None:
            answer.usage = _openai_usage(chunk.usage)
        for choice in chunk.choices:
            delta = choice.delta
            answer.text += delta.content or ""
            extra = delta.model_extra or {}
            answer.reasoning += extra.get("reasoning_content") or extra.get("reasoning") or ""
            for call in delta.tool_calls or []:
                slot = calls.setdefault(call.index, {"id": None, "name": "", "args": ""})
                slot["id"] = call.id or slot["id"]
                if call.function is not None:
                    slot["name"] = call.function.name or slot["name"]
                    slot["args"] += call.function.arguments or ""
            if choice.finish_reason:
                answer.stop = choice.finish_reason
    answer.calls = [
        Call(c["id"], c["name"], json.loads(c["args"] or "{}")) for _, c in sorted(calls.items())
    ]
    return answer


def openai_completion(completion: Any) -> Answer:
    choice = completion.choices[0]
    message = choice.message
    extra = message.model_extra or {}
    calls = [
        Call(c.id, c.function.name, json.loads(c.function.arguments or "{}"))
        for c in message.tool_calls or []
    ]
    return Answer(
        text=message.content or "",
        reasoning=extra.get("reasoning_content") or "",
        calls=calls,
        stop=choice.finish_reason,
        usage=_openai_usage(completion.usage),
    )


def _anthropic_usage(usage: Any) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens or 0,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens or 0,
    }


def anthropic_events(events: list[Any], answer: Answer | None = None) -> Answer:
    """Assemble raw Messages stream events (``message_start`` ... ``message_delta``);
    helper events of ``messages.stream()`` (``text``, ``thinking``, ...) are skipped."""
    answer = answer or Answer()
    blocks: dict[int, dict[str, Any]] = {}
    usage: dict[str, Any] = {}
    signatures: list[str] = []
    for event in events:
        kind = event.type
        if kind == "message_start":
            usage = _anthropic_usage(event.message.usage)
        elif kind == "content_block_start":
            block = event.content_block.model_dump()
            block["json"] = ""
            blocks[event.index] = block
            if block["type"] == "text":
                answer.text += block["text"]
            elif block["type"] == "thinking":
                answer.reasoning += block["thinking"]
                if block["signature"]:
                    signatures.append(block["signature"])
        elif kind == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                answer.text += delta.text
            elif delta.type == "thinking_delta":
                answer.reasoning += delta.thinking
            elif delta.type == "signature_delta":
                signatures.append(delta.signature)
            elif delta.type == "input_json_delta":
                blocks[event.index]["json"] += delta.partial_json
        elif kind == "message_delta":
            answer.stop = event.delta.stop_reason
            answer.stop_sequence = event.delta.stop_sequence
            wire = event.usage
            usage["output_tokens"] = wire.output_tokens
            for key in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
                value = getattr(wire, key, None)
                if value is not None:
                    usage[key] = value
    for _, block in sorted(blocks.items()):
        if block["type"] == "tool_use":
            arguments = json.loads(block["json"]) if block["json"] else block["input"]
            answer.calls.append(Call(block["id"], block["name"], arguments))
    answer.signature = "".join(signatures) or None
    answer.usage = usage
    return answer


def anthropic_message(message: Any) -> Answer:
    answer = Answer(
        stop=message.stop_reason,
        stop_sequence=message.stop_sequence,
        usage=_anthropic_usage(message.usage),
    )
    signatures: list[str] = []
    for block in message.content:
        if block.type == "text":
            answer.text += block.text
        elif block.type == "thinking":
            answer.reasoning += block.thinking
            if block.signature:
                signatures.append(block.signature)
        elif block.type == "tool_use":
            answer.calls.append(Call(block.id, block.name, dict(block.input)))
    answer.signature = "".join(signatures) or None
    return answer


# --- what an upstream was asked -------------------------------------------------------------


@dataclass
class Asked:
    """An upstream request body in neutral terms (walked from its raw JSON).

    ``turns`` are (role, items) with role ``user`` or ``assistant``; items are
    ``("text", s)``, ``("image", url_or_data_url)``, ``("call", id, name, args)``,
    ``("result", id, name, text)`` and ``("thinking", text, signature)``; a field the
    wire does not carry is None (Gemini call ids, OpenAI/Anthropic result names).
    ``system_at`` says where the system prompt was: ``messages[0]``, ``system`` or
    ``systemInstruction``."""

    system: list[str] = field(default_factory=list)
    system_at: str | None = None
    turns: list[tuple[str, list[tuple[Any, ...]]]] = field(default_factory=list)
    tools: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)
    tool_choice: Any = None
    max_tokens: int | None = None
    stop: list[str] | None = None


def _image_data_url(media_type: str, data: str) -> str:
    return f"data:{media_type};base64,{data}"


def asked(wire: str, body: dict[str, Any]) -> Asked:
    out = Asked()
    if wire == "gemini":
        _asked_gemini(out, body)
    elif wire == "anthropic":
        _asked_anthropic(out, body)
    elif wire == "responses":
        from .responses_assemble import asked_responses

        asked_responses(out, body)
    else:
        _asked_openai(out, body)
    return out


def _openai_items(content: Any) -> list[tuple[Any, ...]]:
    if isinstance(content, str):
        return [("text", content)] if content else []
    items: list[tuple[Any, ...]] = []
    for part in content or []:
        if part["type"] == "text":
            items.append(("text", part["text"]))
        elif part["type"] == "image_url":
            items.append(("image", part["image_url"]["url"]))
    return items


def _asked_openai(out: Asked, body: dict[str, Any]) -> None:
    for i, message in enumerate(body["messages"]):
        role = message["role"]
        if role in ("system", "developer"):
            out.system.append("".join(t for _, t in _openai_items(message["content"])))
            out.system_at = out.system_at or f"messages[{i}]"
            continue
        if role == "tool":
            item = ("result", message["tool_call_id"], None, message["content"])
            if out.turns and out.turns[-1][0] == "user" and out.turns[-1][1][-1][0] == "result":
                out.turns[-1][1].append(item)
            else:
                out.turns.append(("user", [item]))
            continue
        items = _openai_items(message.get("content"))
        for call in message.get("tool_calls") or []:
            fn = call["function"]
            items.append(("call", call["id"], fn["name"], json.loads(fn["arguments"] or "{}")))
        out.turns.append((role, items))
    out.tools = [
        (
            t["function"]["name"],
            t["function"].get("description"),
            t["function"].get("parameters") or {},
        )
        for t in body.get("tools") or []
    ]
    out.tool_choice = body.get("tool_choice")
    out.max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    stop = body.get("stop")
    out.stop = [stop] if isinstance(stop, str) else stop


def _anthropic_items(content: Any) -> list[tuple[Any, ...]]:
    if isinstance(content, str):
        return [("text", content)] if content else []
    items: list[tuple[Any, ...]] = []
    for block in content:
        kind = block["type"]
        if kind == "text":
            items.append(("text", block["text"]))
        elif kind == "image":
            source = block["source"]
            if source["type"] == "url":
                items.append(("image", source["url"]))
            else:
                items.append(("image", _image_data_url(source["media_type"], source["data"])))
        elif kind == "tool_use":
            items.append(("call", block["id"], block["name"], block["input"]))
        elif kind == "tool_result":
            result = block.get("content")
            text = (
                result
                if isinstance(result, str)
                else "".join(b["text"] for b in result or [] if b["type"] == "text")
            )
            items.append(("result", block["tool_use_id"], None, text))
        elif kind == "thinking":
            items.append(("thinking", block["thinking"], block["signature"]))
    return items


def _asked_anthropic(out: Asked, body: dict[str, Any]) -> None:
    system = body.get("system")
    if system is not None:
        out.system_at = "system"
        out.system = [system] if isinstance(system, str) else [b["text"] for b in system]
    out.turns = [(m["role"], _anthropic_items(m["content"])) for m in body["messages"]]
    out.tools = [
        (t["name"], t.get("description"), t.get("input_schema") or {})
        for t in body.get("tools") or []
    ]
    out.tool_choice = body.get("tool_choice")
    out.max_tokens = body.get("max_tokens")
    out.stop = body.get("stop_sequences")


def _asked_gemini(out: Asked, body: dict[str, Any]) -> None:
    system = body.get("systemInstruction")
    if system is not None:
        out.system_at = "systemInstruction"
        out.system = [p["text"] for p in system["parts"]]
    for content in body["contents"]:
        items: list[tuple[Any, ...]] = []
        for part in content["parts"]:
            if "functionCall" in part:
                call = part["functionCall"]
                items.append(("call", call.get("id"), call["name"], call.get("args") or {}))
            elif "functionResponse" in part:
                response = part["functionResponse"]
                payload = response["response"]
                text = payload.get("output", payload.get("error"))
                items.append(("result", response.get("id"), response["name"], text))
            elif "inlineData" in part:
                data = part["inlineData"]
                items.append(("image", _image_data_url(data["mimeType"], data["data"])))
            elif "fileData" in part:
                items.append(("image", part["fileData"]["fileUri"]))
            elif part.get("thought"):
                items.append(("thinking", part.get("text", ""), part.get("thoughtSignature")))
            elif "text" in part:
                items.append(("text", part["text"]))
        role = "assistant" if content["role"] == "model" else "user"
        out.turns.append((role, items))
    out.tools = [
        (d["name"], d.get("description"), d.get("parameters") or {})
        for t in body.get("tools") or []
        for d in t.get("functionDeclarations") or []
    ]
    out.tool_choice = body.get("toolConfig")
    config = body.get("generationConfig") or {}
    out.max_tokens = config.get("maxOutputTokens")
    out.stop = config.get("stopSequences")
