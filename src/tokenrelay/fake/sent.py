"""What the fake upstream actually sent of a stream, summarised for a test to compare
with what the gateway charged: the token counts it reported (the last input and output
count, and whether the last report was final), and the characters of content (text,
reasoning, tool-call arguments) in the events it wrote before the stream ended or the
client went away.

Read from the bytes written, in each wire's own terms, independently of the gateway's
codecs (this is the other side of the comparison).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .wire import Proto

__all__ = ["Sent", "summarize"]


@dataclass(slots=True)
class Sent:
    input: int | None = None
    output: int | None = None
    final: bool = False  # the last counts sent were the answer's whole ones
    chars: int = 0
    events: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "final": self.final,
            "chars": self.chars,
            "events": self.events,
        }


def _data(event: bytes) -> tuple[str, Any]:
    name, lines = "", []
    for line in event.decode("utf-8", "replace").splitlines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
    try:
        return name, json.loads("\n".join(lines))
    except ValueError:
        return name, None  # [DONE], malformed


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _openai(obj: dict[str, Any], sent: Sent) -> None:
    usage = obj.get("usage")
    if isinstance(usage, dict):
        sent.input, sent.output, sent.final = (
            _int(usage.get("prompt_tokens")),
            _int(usage.get("completion_tokens")),
            True,
        )
    for choice in obj.get("choices") or ():
        delta = choice.get("delta") or {}
        sent.chars += len(delta.get("content") or "")
        sent.chars += len(delta.get("reasoning_content") or delta.get("reasoning") or "")
        for call in delta.get("tool_calls") or ():
            sent.chars += len((call.get("function") or {}).get("arguments") or "")


def _anthropic(kind: str, obj: dict[str, Any], sent: Sent) -> None:
    kind = obj.get("type") or kind
    if kind == "message_start":
        usage = (obj.get("message") or {}).get("usage")
        if isinstance(usage, dict):
            keys = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
            sent.input = sum(_int(usage.get(k)) or 0 for k in keys)
            sent.output, sent.final = _int(usage.get("output_tokens")), False
    elif kind == "content_block_delta":
        delta = obj.get("delta") or {}
        sent.chars += len(delta.get("text") or delta.get("thinking") or "")
        sent.chars += len(delta.get("partial_json") or "")
    elif kind == "message_delta":
        usage = obj.get("usage")
        if isinstance(usage, dict):
            if _int(usage.get("input_tokens")) is not None:
                sent.input = usage["input_tokens"]
            sent.output, sent.final = _int(usage.get("output_tokens")), True


def _gemini(obj: dict[str, Any], sent: Sent) -> None:
    finished = False
    for candidate in obj.get("candidates") or ():
        finished = finished or bool(candidate.get("finishReason"))
        for part in (candidate.get("content") or {}).get("parts") or ():
            sent.chars += len(part.get("text") or "")
            call = part.get("functionCall")
            if isinstance(call, dict):
                sent.chars += len(json.dumps(call.get("args") or {}, separators=(",", ":")))
    usage = obj.get("usageMetadata")
    if isinstance(usage, dict):
        sent.input = _int(usage.get("promptTokenCount"))
        out = _int(usage.get("candidatesTokenCount"))
        if out is not None:
            sent.output = out + (_int(usage.get("thoughtsTokenCount")) or 0)
        sent.final = finished


def summarize(proto: Proto, events: list[bytes]) -> Sent:
    """The summary of ``events``, the whole SSE events written (in order)."""
    sent = Sent(events=len(events))
    for event in events:
        kind, obj = _data(event)
        if not isinstance(obj, dict):
            continue
        if proto == "anthropic":
            _anthropic(kind, obj, sent)
        elif proto == "gemini":
            _gemini(obj, sent)
        else:
            _openai(obj, sent)
    return sent
