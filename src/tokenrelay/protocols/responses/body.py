"""The non-streaming Responses body: the fold of the stream as a ``response`` object
(``status``, ``output`` items, ``usage``), the same object ``response.completed``
carries at the end of a stream."""

from __future__ import annotations

from typing import Any

from ...fold import Fold
from .wire import FINAL, Envelope, new_id, state_echo, status_of


def output_items(fold: Fold) -> list[dict[str, Any]]:
    """Reasoning, then the message, then one ``function_call`` per call (choice 0). A
    non-streaming body cannot see the request's ``include``: a reasoning signature is
    always given as ``encrypted_content`` (see ``DROPPED``)."""
    choice = fold.ordered_choices()[0]
    items: list[dict[str, Any]] = []
    if choice.reasoning or choice.reasoning_signature:
        summary = [{"type": "summary_text", "text": choice.reasoning}] if choice.reasoning else []
        item: dict[str, Any] = {"id": new_id("rs"), "type": "reasoning", "summary": summary}
        if choice.reasoning_signature:
            item["encrypted_content"] = choice.reasoning_signature
        items.append(item)
    if choice.text or not choice.tool_calls:
        text = {"type": "output_text", "annotations": [], "logprobs": [], "text": choice.text}
        items.append(
            {
                "id": new_id("msg"),
                "type": "message",
                "status": "completed",
                "content": [text],
                "role": "assistant",
            }
        )
    for call in choice.ordered_tool_calls():
        items.append(
            {
                "id": new_id("fc"),
                "type": "function_call",
                "status": "completed",
                "arguments": call.arguments,
                "call_id": call.id or new_id("call"),
                "name": call.name,
            }
        )
    return items


def encode_response(fold: Fold, model: str) -> dict[str, Any]:
    """The ``response`` object of a finished (non-streamed) answer: a Responses
    upstream's own final object (only ``model`` rewritten), else built from the fold."""
    final = fold.extra.get(FINAL)
    if isinstance(final, dict):
        return {**final, "model": model, **state_echo(fold.request)}
    choice = fold.ordered_choices()[0]
    status, incomplete = status_of(choice.finish_reason)
    envelope = Envelope(model, fold.request, fold.id if fold.id.startswith("resp_") else None)
    return envelope.response(status, output_items(fold), fold.usage_or_estimate(), incomplete)
