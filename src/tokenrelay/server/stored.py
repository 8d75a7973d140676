"""Stored answers, for the client protocols that keep state (``ProtocolSpec.state``: the
Responses API). A request that continues a kept answer gets its history before it is
decoded; a finished answer that is to be kept is written to the database (the store's
``responses`` table) after the exchange ends, off the request path. Until the write is
done it is served from memory, so a ``GET`` right after the stream ended finds it.

Every record belongs to the caller's owner (``key:<id>``, ``master``, ``open``): another
key's id is a 404, the same as an id that never existed or has expired. The writes of
one id are made in the order they were asked for (a background response is kept when it
is created, then again when it ends). ``GET {path}/{id}`` and ``/cancel`` are
``background.py``'s, which knows the running ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..events import GatewayError
from ..fold import Tally
from ..protocols.base import ClientProtocol, StateCodec
from ..protocols.registry import REGISTRY
from ..store import DRIVER_ERRORS

if TYPE_CHECKING:
    from .accounts import Accounts

log = logging.getLogger("tokenrelay.stored")

PURGE_EVERY = 3600.0  # seconds between deletions of expired records


class Kept:
    """The stored answers of every stateful client protocol, by protocol name."""

    def __init__(self, accounts: Accounts, retention: float) -> None:
        self.accounts = accounts
        self.retention = retention
        self.codecs: dict[str, tuple[ClientProtocol, StateCodec]] = {
            p.name: (p.client, p.state)
            for p in REGISTRY
            if p.state is not None and p.client is not None
        }
        self._pending: dict[str, tuple[str, dict[str, Any]]] = {}  # id -> (owner, record)
        self._tasks: set[asyncio.Task[None]] = set()
        self._last: dict[str, asyncio.Task[None]] = {}  # id -> its latest write
        self._purged = 0.0

    def state(self, protocol: str) -> StateCodec | None:
        found = self.codecs.get(protocol)
        return found[1] if found is not None else None

    # --- the request path ---------------------------------------------------------------

    async def find(self, protocol: str, id: str, owner: str) -> dict[str, Any] | None:
        pending = self._pending.get(id)
        if pending is not None:
            return pending[1] if pending[0] == owner else None
        store = self.accounts.store
        return await store.get_response(id, owner) if store is not None else None

    async def prepare(
        self, state: StateCodec, protocol: str, body: dict[str, Any], owner: str
    ) -> dict[str, Any]:
        """``body`` with the history of the kept answer it continues, if it does (404
        for an id that is not the caller's or has expired)."""
        previous = state.previous(body)
        if previous is None:
            return body
        record = await self.find(protocol, previous, owner)
        if record is None:
            raise state.not_found(previous, "previous_response_id")
        if state.running(record):  # its output is not there yet to continue from
            raise GatewayError(
                "invalid_request",
                f"Previous response with id '{previous}' has not finished yet.",
                param="previous_response_id",
                code="invalid_value",
            )
        return state.continued(body, record)

    def keeper(
        self, state: StateCodec, body: dict[str, Any], owner: str
    ) -> Callable[[Tally], None] | None:
        """What keeps this request's answer when its exchange ends (None: not kept)."""
        if not state.keeps(body):
            return None

        def keep(tally: Tally) -> None:
            if tally.final is not None:
                self.put(owner, state.record(body, tally.final), state)

        return keep

    def put(
        self, owner: str, record: dict[str, Any], state: StateCodec
    ) -> asyncio.Task[None] | None:
        """Keep ``record`` (in memory at once); the task that writes it to the database."""
        id = state.record_id(record)
        if not id:
            return None
        self._pending[id] = (owner, record)
        task = asyncio.ensure_future(self._write(id, owner, record, self._last.get(id)))
        self._tasks.add(task)
        self._last[id] = task
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: self._forget(id, t))
        return task

    def _forget(self, id: str, task: asyncio.Task[None]) -> None:
        if self._last.get(id) is task:
            del self._last[id]

    async def _write(
        self, id: str, owner: str, record: dict[str, Any], before: asyncio.Task[None] | None
    ) -> None:
        store = self.accounts.store
        try:
            if before is not None:  # the writes of one id land in order
                await asyncio.wait({before})
            if store is not None:
                await store.put_response(id, owner, record, self.retention)
                now = time.monotonic()
                if now - self._purged > PURGE_EVERY:
                    self._purged = now
                    await store.purge_responses()
        except DRIVER_ERRORS as exc:  # kept in memory no longer: the answer was delivered
            log.warning("response %s not stored: %s", id, type(exc).__name__)
        finally:
            if self._pending.get(id, (None, record))[1] is record:
                self._pending.pop(id, None)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)

    # --- the state routes ---------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = []
        for name, (_, state) in self.codecs.items():
            base = state.path + "/{response_id}"
            for path, handler, method in (
                (base, self._delete, "DELETE"),  # (background.py's first, for its own)
                (base + "/input_items", self._input_items, "GET"),
            ):
                routes.append(Route(path, bound(handler, name), methods=[method]))
        return routes

    async def record(self, request: Request, protocol: str) -> tuple[str, dict[str, Any]]:
        """The caller's owner and the record the path names (404 if not theirs)."""
        state = self.codecs[protocol][1]
        principal = await self.accounts.principal(request.headers)
        id = request.path_params["response_id"]
        record = await self.find(protocol, id, principal.owner)
        if record is None:
            raise state.not_found(id)
        return principal.owner, record

    async def _input_items(self, request: Request, protocol: str) -> Response:
        _, record = await self.record(request, protocol)
        state = self.codecs[protocol][1]
        return JSONResponse(state.input_items(record, request.query_params))

    async def _delete(self, request: Request, protocol: str) -> Response:
        state = self.codecs[protocol][1]
        owner, record = await self.record(request, protocol)
        return await self.delete(state, state.record_id(record), owner)

    async def delete(self, state: StateCodec, id: str, owner: str) -> Response:
        """Forget ``id``, after its writes under way (none lands after the delete)."""
        last = self._last.get(id)
        if last is not None:
            await asyncio.wait({last})
        self._pending.pop(id, None)
        store = self.accounts.store
        if store is not None:
            await store.delete_response(id, owner)
        return JSONResponse(state.deleted(id))


def bound(handler: Callable[[Request, str], Any], protocol: str) -> Callable[[Request], Any]:
    """A route handler for one protocol, its errors in that protocol's shape."""
    codec = REGISTRY.client(protocol)

    async def endpoint(request: Request) -> Response:
        try:
            response: Response = await handler(request, protocol)
        except GatewayError as error:
            return JSONResponse(codec.error_body(error), error.status, error.headers or None)
        return response

    return endpoint
