"""Generated scenarios beyond plain text: parallel tool calls (``tools``), reasoning with
a signature (``think``), and the max-tokens and stop-sequence stops (``limit=1``), in the
four wire formats (the Responses one in ``responses_wire.py``).

A ``Scene`` is what the answer holds (reasoning pieces and their signature, text pieces,
tool calls, the stop); ``openai_scene``, ``anthropic_scene`` and ``gemini_scene`` write
it as each provider streams it, one SSE event per list item. What a scene holds is read
from the request in the route's own format (``scene_for``), so the answer proves what
the request said.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from ..stops import cut_at_stop
from .cache_counts import NO_CACHE, CacheCounts
from .options import Script, ScriptError
from .wire import Proto, last_user_text, openai_usage_chunk, prompt_tokens, split_words

__all__ = [
    "Call",
    "Scene",
    "anthropic_scene",
    "gemini_scene",
    "max_output_tokens",
    "offered_tools",
    "openai_scene",
    "scene_for",
    "signature",
    "stop_sequences",
]

Stop = Literal["stop", "length", "tool_calls"]

_encode = msgspec.json.Encoder().encode
_CALL = re.compile(r"/call\s+([A-Za-z0-9_.\-]+)\s*(.*)", re.S)
_ARGS_PIECE = 8  # characters of arguments JSON per streamed fragment


@dataclass(slots=True)
class Call:
    name: str
    arguments: str  # the JSON text as the user wrote it (an object)

    def pieces(self) -> list[str]:
        text = self.arguments
        return [text[i : i + _ARGS_PIECE] for i in range(0, len(text), _ARGS_PIECE)] or [""]


@dataclass(slots=True)
class Scene:
    prompt: int
    texts: list[str] = field(default_factory=list)
    thought: list[str] = field(default_factory=list)
    signature: str | None = None
    calls: list[Call] = field(default_factory=list)
    stop: Stop = "stop"
    stop_sequence: str | None = None  # the request's stop sequence that ended the text
    interleave: bool = False
    cache: CacheCounts = NO_CACHE  # what the prompt cache did (``cache=1``)

    @property
    def answer_tokens(self) -> int:
        """Tokens of the answer (one per text chunk and per arguments fragment)."""
        return len(self.texts) + sum(len(c.pieces()) for c in self.calls)

    @property
    def thought_tokens(self) -> int:
        return len(self.thought)


def signature(text: str) -> str:
    """The opaque signature the fake gives ``text``: ``base64("sig:" + text)``."""
    return base64.b64encode(("sig:" + text).encode()).decode()


# --- reading requests -------------------------------------------------------------------


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def offered_tools(proto: Proto, body: dict[str, Any]) -> list[str]:
    """The names of the tools the request offers, as its wire format declares them."""
    names: list[str] = []
    for tool in _list(body.get("tools")):
        if not isinstance(tool, dict):
            continue
        if proto == "gemini":
            for declaration in _list(tool.get("functionDeclarations")):
                if isinstance(declaration, dict) and isinstance(declaration.get("name"), str):
                    names.append(declaration["name"])
        elif proto in ("anthropic", "responses"):
            if isinstance(tool.get("name"), str):
                names.append(tool["name"])
        else:
            function = tool.get("function")
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                names.append(function["name"])
    return names


def max_output_tokens(proto: Proto, body: dict[str, Any]) -> int | None:
    """The request's output limit, as its wire format says it."""
    if proto == "gemini":
        config = body.get("generationConfig")
        value = config.get("maxOutputTokens") if isinstance(config, dict) else None
    elif proto == "anthropic":
        value = body.get("max_tokens")
    elif proto == "responses":
        value = body.get("max_output_tokens")
    else:
        value = body.get("max_completion_tokens")
        if value is None:
            value = body.get("max_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def stop_sequences(proto: Proto, body: dict[str, Any]) -> list[str]:
    """The request's stop sequences, as its wire format says them."""
    if proto == "gemini":
        config = body.get("generationConfig")
        value = config.get("stopSequences") if isinstance(config, dict) else None
    elif proto == "responses":
        return []  # the Responses API has no stop sequences
    else:
        value = body.get("stop_sequences" if proto == "anthropic" else "stop")
    if isinstance(value, str):
        value = [value]
    return [s for s in value if isinstance(s, str)] if isinstance(value, list) else []


def _calls(text: str, offered: list[str]) -> tuple[str, list[Call]]:
    lines = text.split("\n")
    first = next((i for i, line in enumerate(lines) if line.lstrip().startswith("/call")), None)
    if first is None:
        raise ScriptError("tools: the last user message has no '/call NAME {json}' line")
    calls: list[Call] = []
    for line in lines[first:]:
        if not line.strip():
            continue
        match = _CALL.fullmatch(line.strip())
        if match is None:
            raise ScriptError(f"tools: {line.strip()!r} is not '/call NAME {{json}}'")
        name, arguments = match.group(1), match.group(2).strip() or "{}"
        try:
            value = msgspec.json.decode(arguments)
        except msgspec.DecodeError:
            raise ScriptError(f"tools: the arguments of {name} are not JSON") from None
        if not isinstance(value, dict):
            raise ScriptError(f"tools: the arguments of {name} must be a JSON object")
        if name not in offered:
            raise ScriptError(
                f"tools: the request does not offer a tool {name!r} (offered: {offered})"
            )
        calls.append(Call(name, arguments))
    return "\n".join(lines[:first]), calls


def scene_for(script: Script, proto: Proto, body: dict[str, Any]) -> Scene:
    """The scene a ``tools`` / ``think`` script (or any script with ``limit``) answers
    ``body`` with; raises ``ScriptError`` (400) for a request it cannot serve."""
    scene = Scene(prompt=prompt_tokens(proto, body), interleave=script.interleave)
    user = last_user_text(proto, body)
    if script.kind == "gen":
        scene.texts = [f"tok{i} " for i in range(script.n)]
    elif script.kind == "tools":
        prefix, scene.calls = _calls(user, offered_tools(proto, body))
        scene.texts = split_words(prefix)
        scene.stop = "tool_calls"
    else:
        scene.texts = split_words(user)
    if script.kind == "think":
        thought = "Reasoning about: " + user
        scene.thought = split_words(thought)
        scene.signature = signature(thought)
    if script.limit:
        scene.texts, scene.stop_sequence = cut_at_stop(scene.texts, stop_sequences(proto, body))
        if scene.stop_sequence is not None:
            scene.calls, scene.stop = [], "stop"
    limit = max_output_tokens(proto, body) if script.limit else None
    if limit is not None and len(scene.texts) > limit:
        scene.texts = scene.texts[:limit]
        scene.stop, scene.stop_sequence = "length", None
    return scene


# --- OpenAI Chat Completions ---------------------------------------------------------------

_OPENAI_STOP = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}


def openai_scene(
    scene: Scene,
    *,
    ident: str,
    created: int,
    model: str,
    include_usage: bool,
    no_done: bool,
) -> list[bytes]:
    """Role chunk, ``reasoning_content`` chunks (the DeepSeek way), content chunks, tool
    call fragments, the finish chunk, the usage chunk (if asked), ``[DONE]``."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
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

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events.extend(chunk({"content": None, "reasoning_content": t}) for t in scene.thought)
    events.extend(chunk({"content": t}) for t in scene.texts)
    fragments: list[list[bytes]] = []
    for i, call in enumerate(scene.calls):
        head = {
            "index": i,
            "id": f"call_{ident}_{i}",
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        mine = [chunk({"tool_calls": [head]})]
        mine.extend(
            chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
            for piece in call.pieces()
        )
        fragments.append(mine)
    if scene.interleave:
        longest = max((len(f) for f in fragments), default=0)
        events.extend(f[k] for k in range(longest) for f in fragments if k < len(f))
    else:
        events.extend(e for f in fragments for e in f)
    events.append(chunk({}, _OPENAI_STOP[scene.stop]))
    if include_usage:
        output = scene.answer_tokens + scene.thought_tokens
        usage = {
            "prompt_tokens": scene.prompt,
            "completion_tokens": output,
            "total_tokens": scene.prompt + output,
            "completion_tokens_details": {"reasoning_tokens": scene.thought_tokens},
        }
        events.append(openai_usage_chunk(ident, created, model, usage))
    if not no_done:
        events.append(b"data: [DONE]\n\n")
    return events


# --- Anthropic Messages ----------------------------------------------------------------------

_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _named(event: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + _encode(obj) + b"\n\n"


def anthropic_scene(scene: Scene, *, ident: str, model: str, no_done: bool) -> list[bytes]:
    """``message_start``; a thinking block (deltas, then its ``signature_delta``); a text
    block; one ``tool_use`` block per call; ``message_delta``; ``message_stop``."""
    message: dict[str, Any] = {
        "id": ident,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": scene.prompt, "output_tokens": 1},
    }
    events = [_named("message_start", {"type": "message_start", "message": message})]
    index = 0

    def block(start: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
        nonlocal index
        events.append(
            _named(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            )
        )
        if index == 0:
            events.append(_named("ping", {"type": "ping"}))
        events.extend(
            _named(
                "content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}
            )
            for d in deltas
        )
        events.append(_named("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1

    if scene.thought:
        deltas = [{"type": "thinking_delta", "thinking": t} for t in scene.thought]
        if scene.signature:
            deltas.append({"type": "signature_delta", "signature": scene.signature})
        block({"type": "thinking", "thinking": "", "signature": ""}, deltas)
    if scene.texts or not (scene.thought or scene.calls):
        block(
            {"type": "text", "text": ""},
            [{"type": "text_delta", "text": t} for t in scene.texts],
        )
    for i, call in enumerate(scene.calls):
        block(
            {"type": "tool_use", "id": f"toolu_{ident}_{i}", "name": call.name, "input": {}},
            [{"type": "input_json_delta", "partial_json": p} for p in ["", *call.pieces()]],
        )
    events.append(
        _named(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": "stop_sequence"
                    if scene.stop_sequence
                    else _ANTHROPIC_STOP[scene.stop],
                    "stop_sequence": scene.stop_sequence,
                },
                "usage": {"output_tokens": scene.answer_tokens + scene.thought_tokens},
            },
        )
    )
    if not no_done:
        events.append(_named("message_stop", {"type": "message_stop"}))
    return events


# --- Gemini generateContent ------------------------------------------------------------------

_GEMINI_STOP = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}


def gemini_scene(scene: Scene, *, ident: str, model: str, no_done: bool) -> list[bytes]:
    """One chunk per thought part (``thought: true``), one per text part (the first one
    carrying the thought signature), one with every ``functionCall`` part (the first call
    signed, as Gemini 3 does); the last chunk has ``finishReason`` and the full
    ``usageMetadata``. CRLF line endings, no terminator."""
    parts: list[list[dict[str, Any]]] = [[{"text": t, "thought": True}] for t in scene.thought]
    signed = False
    for text in scene.texts:
        part: dict[str, Any] = {"text": text}
        if scene.signature and not signed:
            part["thoughtSignature"] = scene.signature
            signed = True
        parts.append([part])
    if scene.calls:
        calls: list[dict[str, Any]] = []
        for i, call in enumerate(scene.calls):
            wire: dict[str, Any] = {
                "functionCall": {"name": call.name, "args": msgspec.json.decode(call.arguments)}
            }
            if i == 0:
                wire["thoughtSignature"] = signature(f"{call.name} {call.arguments}")
            calls.append(wire)
        parts.append(calls)
    if not parts:
        parts.append([{"text": ""}])
    thoughts = scene.thought_tokens
    answer = scene.answer_tokens
    final: dict[str, int] = {
        "promptTokenCount": scene.prompt,
        "candidatesTokenCount": answer,
        "totalTokenCount": scene.prompt + answer + thoughts,
    }
    if thoughts:
        final["thoughtsTokenCount"] = thoughts
    partial = {"promptTokenCount": scene.prompt, "totalTokenCount": scene.prompt}
    out: list[bytes] = []
    last = len(parts) - 1
    for i, chunk_parts in enumerate(parts):
        candidate: dict[str, Any] = {"content": {"parts": chunk_parts, "role": "model"}}
        if i == last and not no_done:
            candidate["finishReason"] = _GEMINI_STOP[scene.stop]
        candidate["index"] = 0
        obj = {
            "candidates": [candidate],
            "usageMetadata": final if i == last else partial,
            "modelVersion": model,
            "responseId": ident,
        }
        out.append(b"data: " + _encode(obj) + b"\r\n\r\n")
    return out
