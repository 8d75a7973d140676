"""What the gateway keeps of a Responses answer (``store``, the API's default) and how a
request continues one (``previous_response_id``). Pure: the server (``server/stored.py``)
reads and writes the records in the database.

A record is ``{"id", "input", "response"}``: the request's whole input as items (the
history it continued, then its own input) and the final ``response`` object. A request
with ``previous_response_id`` gets that record's input and output items in front of its
own input, then is translated (or passed through) like any other: so a conversation can
continue on any upstream. ``instructions`` are not carried over (as on OpenAI).
Reasoning items without ``encrypted_content`` are not replayed: no stateless upstream
could resolve them by id (the upstream is always called with ``store: false``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...events import ChatRequest, GatewayError
from .wire import Envelope

PATH = "/v1/responses"
RUNNING = ("queued", "in_progress")  # a background response's statuses before its end
LOST = {
    "code": "server_error",
    "message": "The gateway running this background response stopped before it finished "
    "(it was restarted or lost its connection to the others); create it again.",
}


def input_list(value: Any) -> list[Any]:
    """``input`` as a list of items (a string is one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return list(value) if isinstance(value, list) else []


def _replayable(item: Any) -> bool:
    return not (
        isinstance(item, dict)
        and item.get("type") == "reasoning"
        and not item.get("encrypted_content")
    )


class ResponsesState:
    """The ``StateCodec`` of the Responses API (see ``protocols/base.py``)."""

    path = PATH

    def previous(self, body: dict[str, Any]) -> str | None:
        value = body.get("previous_response_id")
        return value if isinstance(value, str) and value else None

    def continued(self, body: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
        output = (record.get("response") or {}).get("output") or []
        history = [*record.get("input", []), *(i for i in output if _replayable(i))]
        return {**body, "input": [*history, *input_list(body.get("input"))]}

    def keeps(self, body: dict[str, Any]) -> bool:
        return body.get("store", True) is not False

    def record(self, body: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": final.get("id", ""),
            "input": input_list(body.get("input")),
            "response": final,
        }

    def record_id(self, record: dict[str, Any]) -> str:
        return str(record.get("id", ""))

    def view(self, record: dict[str, Any]) -> dict[str, Any]:
        return dict(record.get("response") or {})

    def input_items(self, record: dict[str, Any], query: Mapping[str, str]) -> dict[str, Any]:
        """``GET /v1/responses/{id}/input_items``: a page of the input items with ids,
        ``order`` (``desc`` by default, as on OpenAI), ``after`` an item id, ``limit``
        1-100 (20)."""
        rid = self.record_id(record)
        items = [_listed(item, rid, i) for i, item in enumerate(record.get("input", []))]
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise _invalid("'order' must be 'asc' or 'desc'", "order")
        if order == "desc":
            items.reverse()
        after = query.get("after")
        if after:
            ids = [i["id"] for i in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        limit_text = query.get("limit", "20")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
            raise _invalid("'limit' must be an integer from 1 to 100", "limit")
        page = items[: int(limit_text)]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > len(page),
        }

    def deleted(self, id: str) -> dict[str, Any]:
        return {"id": id, "object": "response.deleted", "deleted": True}

    def not_found(self, id: str, param: str | None = None) -> GatewayError:
        what = "Previous response" if param else "Response"
        return GatewayError(
            "not_found",
            f"{what} with id '{id}' not found.",
            code="previous_response_not_found" if param else "response_not_found",
            param=param,
        )

    # --- background mode -----------------------------------------------------------------

    def background(self, body: dict[str, Any]) -> bool:
        if body.get("background") is not True:
            return False
        if body.get("store", True) is False:
            raise _invalid("Background mode requires 'store' to be true.", "background")
        return True

    def pending(self, request: ChatRequest) -> dict[str, Any]:
        return Envelope(request.model, request).response("queued", [])

    def is_background(self, record: dict[str, Any]) -> bool:
        return (record.get("response") or {}).get("background") is True

    def running(self, record: dict[str, Any]) -> bool:
        return self.is_background(record) and self.view(record).get("status") in RUNNING

    def progress(self, record: dict[str, Any], begun: bool) -> dict[str, Any]:
        return {**self.view(record), "status": "in_progress" if begun else "queued"}

    def lost(self, record: dict[str, Any]) -> dict[str, Any]:
        return {**self.view(record), "status": "failed", "error": dict(LOST)}

    def not_background(self, action: str) -> GatewayError:
        return GatewayError(
            "invalid_request",
            f"Only responses created with background=true can be {action}.",
            code="invalid_request",
        )


def _invalid(message: str, param: str) -> GatewayError:
    return GatewayError("invalid_request", message, code="invalid_value", param=param)


def _listed(item: Any, rid: str, i: int) -> dict[str, Any]:
    """An input item as the list gives it: with an id (made from the response's for the
    items that had none) and a message's string content as one text part."""
    out = dict(item) if isinstance(item, dict) else {"type": "message", "content": item}
    kind = out.setdefault("type", "message")
    if kind == "message" and isinstance(out.get("content"), str):
        part = "output_text" if out.get("role") == "assistant" else "input_text"
        out["content"] = [{"type": part, "text": out["content"]}]
    if "id" not in out:
        prefix = "msg" if kind == "message" else "item"
        out["id"] = f"{prefix}_{rid.removeprefix('resp_')}{i:04d}"
    if kind == "message":
        out.setdefault("status", "completed")
    return out


STATE = ResponsesState()
