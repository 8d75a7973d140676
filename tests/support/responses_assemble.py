"""The OpenAI Responses parts of ``support.assemble``: what a Responses recording holds
(walked from its raw JSON), what a Responses client should see of any recording, what
an ``openai`` SDK Responses client received (raw events or the final ``Response``), and
what a Responses upstream was asked."""

from __future__ import annotations

import json
from typing import Any

from .assemble import Answer, Asked, Call, Recorded, Usage, estimate

STOP_OF_CANON = {
    "stop": "completed",
    "tool_calls": "completed",
    "length": "max_output_tokens",
    "content_filter": "content_filter",
}
"""A canonical finish as a Responses client sees it: the ``status`` when completed, the
``incomplete_details.reason`` when incomplete."""


def walk_recording(rec: Recorded, events: list[tuple[str | None, Any]]) -> None:
    calls: dict[int, list[Any]] = {}
    signatures: list[str] = []
    for name, e in events:
        kind = e.get("type") or name
        if kind == "response.output_text.delta":
            rec.text += e["delta"]
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            rec.reasoning += e["delta"]
        elif kind == "response.output_item.added" and e["item"]["type"] == "function_call":
            calls[e["output_index"]] = [e["item"]["call_id"], e["item"]["name"], ""]
        elif kind == "response.function_call_arguments.delta":
            calls[e["output_index"]][2] += e["delta"]
        elif kind == "response.output_item.done" and e["item"]["type"] == "reasoning":
            if e["item"].get("encrypted_content"):
                signatures.append(e["item"]["encrypted_content"])
        elif kind in ("response.completed", "response.incomplete"):
            response = e["response"]
            details = response.get("incomplete_details") or {}
            rec.stop = details.get("reason") or response["status"]
            u = response["usage"]
            inputs = u.get("input_tokens_details") or {}
            rec.usage = Usage(
                input=u["input_tokens"],
                output=u["output_tokens"],
                cached=inputs.get("cached_tokens") or 0,
                reasoning=(u.get("output_tokens_details") or {}).get("reasoning_tokens") or 0,
                cache_write=inputs.get("cache_write_tokens") or 0,
            )
        elif kind == "error":
            rec.error = e["message"]
    rec.calls = [Call(i, n, json.loads(a or "{}")) for i, n, a in calls.values()]
    rec.signature = "".join(signatures) or None


def expect_responses(rec: Recorded) -> Answer:
    """The recording as a Responses client that asked for ``reasoning.encrypted_content``
    sees it: a reasoning signature (Anthropic's, Gemini's text-part one, OpenAI's
    encrypted content) as the reasoning item's ``encrypted_content``."""
    answer = Answer(rec.text, rec.reasoning, rec.signature, rec.calls, error=rec.error)
    canon = rec.canonical_stop
    answer.stop = STOP_OF_CANON[canon] if canon else None
    if rec.usage is not None:
        u = rec.usage
        answer.usage = {
            "input_tokens": u.input,
            "output_tokens": u.output,
            "total_tokens": u.input + u.output,
            "cached_tokens": u.cached,
            "reasoning_tokens": u.reasoning,
        }
    else:
        chars = len(rec.text) + len(rec.reasoning)
        answer.usage = {"output_tokens": estimate(chars), "estimated": True}
    return answer


def _usage(usage: Any) -> dict[str, Any]:
    if usage is None:
        return {}
    out: dict[str, Any] = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "cached_tokens": usage.input_tokens_details.cached_tokens,
        "reasoning_tokens": usage.output_tokens_details.reasoning_tokens,
    }
    if (usage.model_extra or {}).get("estimated"):
        out["estimated"] = True
    return out


def _stop(response: Any) -> str:
    details = response.incomplete_details
    return str(details.reason) if details is not None and details.reason else str(response.status)


def response_answer(response: Any) -> Answer:
    """A final ``Response`` (non-streamed, or ``get_final_response()``)."""
    answer = Answer(stop=_stop(response), usage=_usage(response.usage))
    signatures: list[str] = []
    for item in response.output:
        if item.type == "message":
            answer.text += "".join(c.text for c in item.content if c.type == "output_text")
        elif item.type == "reasoning":
            answer.reasoning += "".join(s.text for s in item.summary)
            if item.encrypted_content:
                signatures.append(item.encrypted_content)
        elif item.type == "function_call":
            answer.calls.append(Call(item.call_id, item.name, json.loads(item.arguments or "{}")))
    answer.signature = "".join(signatures) or None
    return answer


def events_answer(events: list[Any], answer: Answer | None = None) -> Answer:
    """Raw Responses stream events, assembled the way the SDK's accumulator does."""
    answer = answer or Answer()
    calls: dict[int, list[Any]] = {}
    signatures: list[str] = []
    for e in events:
        kind = e.type
        if kind == "response.output_text.delta":
            answer.text += e.delta
        elif kind == "response.reasoning_summary_text.delta":
            answer.reasoning += e.delta
        elif kind == "response.output_item.added" and e.item.type == "function_call":
            calls[e.output_index] = [e.item.call_id, e.item.name, ""]
        elif kind == "response.function_call_arguments.delta":
            calls[e.output_index][2] += e.delta
        elif kind == "response.output_item.done" and e.item.type == "reasoning":
            if e.item.encrypted_content:
                signatures.append(e.item.encrypted_content)
        elif kind in ("response.completed", "response.incomplete"):
            answer.stop = _stop(e.response)
            answer.usage = _usage(e.response.usage)
        elif kind == "error":
            answer.error = e.message
    answer.calls = [Call(i, n, json.loads(a or "{}")) for i, n, a in calls.values()]
    answer.signature = "".join(signatures) or None
    return answer


def _items(content: Any) -> list[tuple[Any, ...]]:
    if isinstance(content, str):
        return [("text", content)] if content else []
    items: list[tuple[Any, ...]] = []
    for part in content or []:
        if part["type"] in ("input_text", "output_text"):
            items.append(("text", part["text"]))
        elif part["type"] == "input_image":
            items.append(("image", part["image_url"]))
    return items


def asked_responses(out: Asked, body: dict[str, Any]) -> None:
    """A Responses body in neutral terms: assistant messages and the calls after them
    make one turn, consecutive outputs one user turn of results (as the OpenAI wire's)."""
    if body.get("instructions") is not None:
        out.system_at = "instructions"
        out.system = [body["instructions"]]
    items = body["input"]
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    for item in items:
        kind = item.get("type", "message")
        if kind == "message" and item["role"] in ("system", "developer"):
            out.system.append("".join(t for _, t in _items(item["content"])))
            out.system_at = out.system_at or "input"
            continue
        if kind == "function_call_output":
            entry: tuple[Any, ...] = ("result", item["call_id"], None, item["output"])
            if out.turns and out.turns[-1][0] == "user" and out.turns[-1][1][-1][0] == "result":
                out.turns[-1][1].append(entry)
            else:
                out.turns.append(("user", [entry]))
            continue
        if kind == "function_call":
            call = ("call", item["call_id"], item["name"], json.loads(item["arguments"] or "{}"))
            if out.turns and out.turns[-1][0] == "assistant":
                out.turns[-1][1].append(call)
            else:
                out.turns.append(("assistant", [call]))
            continue
        if kind == "reasoning":
            continue
        out.turns.append((item["role"], _items(item["content"])))
    out.tools = [
        (t["name"], t.get("description"), t.get("parameters") or {})
        for t in body.get("tools") or []
        if t.get("type") == "function"
    ]
    out.tool_choice = body.get("tool_choice")
    out.max_tokens = body.get("max_output_tokens")
    out.stop = None  # the Responses API has no stop sequences
