"""The OpenAI Responses wire of the fake upstream: a ``Scene`` (plain text, reasoning
with a signature, function calls, the stops) as a Responses event stream and as a
non-streaming ``response`` body, the way ``api.openai.com/v1/responses`` writes them:
``response.created``, ``response.in_progress``, one output item after another (a
``reasoning`` item with summary events and ``encrypted_content``, a ``message``, one
``function_call`` per call), then ``response.completed`` or ``response.incomplete``;
every event with ``event:`` and a monotonic ``sequence_number``."""

from __future__ import annotations

from typing import Any

import msgspec

from .scenes import Scene

__all__ = ["responses_body", "responses_scene"]

_encode = msgspec.json.Encoder().encode


def _response(
    ident: str, model: str, created: int, status: str, output: list[Any], usage: Any
) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "usage": usage,
    }


def _usage(scene: Scene) -> dict[str, Any]:
    output = scene.answer_tokens + scene.thought_tokens
    return {
        "input_tokens": scene.prompt,
        "input_tokens_details": {"cached_tokens": scene.cache.read},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": scene.thought_tokens},
        "total_tokens": scene.prompt + output,
    }


def _items(scene: Scene, ident: str) -> list[tuple[dict[str, Any], list[Any]]]:
    """(final item, its streamed pieces) in output order."""
    items: list[tuple[dict[str, Any], list[Any]]] = []
    if scene.thought:
        text = "".join(scene.thought)
        item: dict[str, Any] = {
            "id": f"rs_{ident}",
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": text}],
            "encrypted_content": scene.signature,
        }
        items.append((item, scene.thought))
    if scene.texts or not (scene.thought or scene.calls):
        text = "".join(scene.texts)
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
        item = {
            "id": f"msg_{ident}",
            "type": "message",
            "status": "completed",
            "content": [part],
            "role": "assistant",
        }
        items.append((item, scene.texts))
    for i, call in enumerate(scene.calls):
        item = {
            "id": f"fc_{ident}_{i}",
            "type": "function_call",
            "status": "completed",
            "arguments": call.arguments,
            "call_id": f"call_{ident}_{i}",
            "name": call.name,
        }
        items.append((item, call.pieces()))
    return items


def responses_scene(
    scene: Scene, *, ident: str, model: str, created: int, no_done: bool
) -> list[bytes]:
    """The scene as a Responses stream, one event per list item (``no_done``: without
    the terminal event)."""
    events: list[bytes] = []

    def emit(kind: str, **fields: Any) -> None:
        data = {"type": kind, **fields, "sequence_number": len(events)}
        events.append(b"event: " + kind.encode() + b"\ndata: " + _encode(data) + b"\n\n")

    rid = f"resp_{ident}"
    emit("response.created", response=_response(rid, model, created, "in_progress", [], None))
    emit("response.in_progress", response=_response(rid, model, created, "in_progress", [], None))
    output: list[dict[str, Any]] = []
    for index, (item, pieces) in enumerate(_items(scene, ident)):
        where = {"item_id": item["id"], "output_index": index}
        kind = item["type"]
        if kind == "message":
            added = {**item, "status": "in_progress", "content": []}
        elif kind == "function_call":
            added = {**item, "status": "in_progress", "arguments": ""}
        else:
            added = {**item, "summary": [], "encrypted_content": None}
        emit("response.output_item.added", item=added, output_index=index)
        if kind == "message":
            empty = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
            emit("response.content_part.added", content_index=0, **where, part=empty)
            for piece in pieces:
                emit(
                    "response.output_text.delta", content_index=0, delta=piece, **where, logprobs=[]
                )
            text = item["content"][0]["text"]
            emit("response.output_text.done", content_index=0, **where, logprobs=[], text=text)
            emit("response.content_part.done", content_index=0, **where, part=item["content"][0])
        elif kind == "function_call":
            for piece in pieces:
                emit("response.function_call_arguments.delta", delta=piece, **where)
            emit("response.function_call_arguments.done", arguments=item["arguments"], **where)
        else:
            summary = item["summary"][0]
            part = {"type": "summary_text", "text": ""}
            emit("response.reasoning_summary_part.added", **where, part=part, summary_index=0)
            for piece in pieces:
                emit("response.reasoning_summary_text.delta", delta=piece, **where, summary_index=0)
            emit(
                "response.reasoning_summary_text.done",
                **where,
                summary_index=0,
                text=summary["text"],
            )
            emit("response.reasoning_summary_part.done", **where, part=summary, summary_index=0)
        emit("response.output_item.done", item=item, output_index=index)
        output.append(item)
    if not no_done:
        status = "incomplete" if scene.stop == "length" else "completed"
        final = _response(rid, model, created, status, output, _usage(scene))
        emit(f"response.{status}", response=final)
    return events


def responses_body(scene: Scene, *, ident: str, model: str, created: int) -> bytes:
    """The non-streaming ``response`` object of the scene."""
    output = [item for item, _ in _items(scene, ident)]
    status = "incomplete" if scene.stop == "length" else "completed"
    return _encode(_response(f"resp_{ident}", model, created, status, output, _usage(scene)))
