"""Background mode of a client protocol that keeps state (the Responses API's
``background: true``): the answer runs in the gateway whoever reads it.

``launch`` keeps the answer's first record (``queued``, with the id it will have) and
starts its production as a task of its own on a hub stream named by that id: the same
attempts, relay and stream target as any stream (``stream_start.py``), but no client's
connection is watched, and readers leaving never stop it (``Stream.background``). The
client gets the queued object at once, or (``stream``) a reader of that stream. The
answer's end keeps its final record, as any stored answer's (``stored.py``), and
settles its one usage record.

``GET {path}/{id}`` polls it: the kept record, or while it runs, its status (``queued``
until the stream has a frame, then ``in_progress``) from the stream here or, through
the Redis mirror, on another replica; a running record that no replica produces any
more (the gateway that ran it died) is ``failed``. ``GET {path}/{id}?stream=true
&starting_after=N`` reads its stream after the event with sequence number N: its events
are numbered from 0, one per hub frame, so that event is frame N + 1 (``encoder.py``,
``passthrough.py``). ``POST {path}/{id}/cancel`` stops it with the hub's one stop
(``Stream.stop``, or ``RemoteStream.stop`` through Redis): the producer is cancelled,
which closes the upstream, and the answer ends ``cancelled``; the reply is the final
object once kept (cancelling again gives it again). ``DELETE`` stops a running answer
the same way before it is forgotten.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Protocol

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from ..events import GatewayError
from ..numbers import decimal
from ..protocols.base import ClientProtocol, StateCodec
from ..streams.hub import Stream, StreamHub
from .stored import Kept, bound
from .stream_start import Production, Reading, StreamStart, StreamTarget
from .streaming import SSEResponse, declares_resume

if TYPE_CHECKING:
    from ..streams.redis_mirror import RemoteStream

CANCEL_WAIT = 10.0  # seconds a cancel waits for the answer's final record
POLL = 0.05  # seconds between looks at the database for a record another replica writes


class Host(Protocol):
    """What background mode needs of the gateway (``relay.Gateway``)."""

    hub: StreamHub

    def attach(
        self,
        stream: Stream | RemoteStream,
        after: int,
        retry: bool = False,
        request_id: str | None = None,
        resumable: bool = True,
        keepalive: bool = True,
    ) -> SSEResponse: ...

    def error_response(self, protocol: ClientProtocol, error: GatewayError, exchange: Any) -> Any:
        """(``stream_start.Host``'s; not used here.)"""
        ...


class Background:
    """The background answers of this gateway, and the routes that poll, stream and
    cancel them (any replica's, with Redis)."""

    def __init__(self, host: Host, kept: Kept) -> None:
        self.host = host
        self.kept = kept
        self._runs: dict[str, asyncio.Task[None]] = {}  # id -> its production, while it runs

    # --- a new background answer --------------------------------------------------------

    async def launch(
        self,
        protocol: ClientProtocol,
        state: StateCodec,
        relay: Reading,
        owner: str,
        body: dict[str, Any],
        headers: Headers,
    ) -> ASGIApp:
        """Keep the queued answer, start it, and answer the client: the queued object,
        or the answer's stream (``stream: true``)."""
        request, exchange = relay.request, relay.exchange
        queued = state.pending(request)
        record = state.record(body, queued)
        id = exchange.tally.response_id = state.record_id(record)
        written = self.kept.put(owner, record, state)
        if written is not None:  # in the database before the client knows the id: any
            await asyncio.wait({written})  # replica finds it
        stream = self.host.hub.create(owner, protocol.name, True, id)
        stream.background = True
        task = asyncio.ensure_future(self._run(stream, protocol, relay, owner))
        stream.producer = task
        self._runs[id] = task
        task.add_done_callback(lambda _: self._runs.pop(id, None))
        if request.stream:
            resumable = declares_resume(headers)
            return self.host.attach(stream, 0, request_id=exchange.request_id, resumable=resumable)
        return JSONResponse(queued, headers={"x-request-id": exchange.request_id})

    async def _run(
        self, stream: Stream, protocol: ClientProtocol, relay: Reading, owner: str
    ) -> None:
        """The production, as ``Opening`` and ``Production`` make it for a client's
        stream, without a client: a stop while the upstream is being opened ends it as
        ``StreamStart.gone`` does; every attempt failing ends it in-band."""
        exchange = relay.exchange
        target = StreamTarget(stream, protocol, relay.request, exchange.tally)
        try:
            upstream = await relay.attempts.open(relay.request)
        except GatewayError as error:
            relay.attempts.end()
            target.fail(error)
            stream.finish()
            stream.producer = None
            exchange.finish(error.kind, error.status)
            return
        except asyncio.CancelledError:  # stopped (cancel, shutdown) before it began
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            start = StreamStart(self.host, protocol, relay, owner, True, stream=stream)
            start.gone()
            return
        production = Production(relay, upstream, target, stream)
        try:
            await production.run()
            await asyncio.sleep(0)  # (as ``Production.start``: readers write the end first)
        finally:
            production.settle()

    # --- the routes -----------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = []
        for name, (_, state) in self.kept.codecs.items():
            base = state.path + "/{response_id}"
            routes.append(Route(base, bound(self._get, name), methods=["GET"]))
            routes.append(Route(base + "/cancel", bound(self._cancel, name), methods=["POST"]))
            routes.append(Route(base, bound(self._delete, name), methods=["DELETE"]))
        return routes

    async def _delete(self, request: Request, protocol: str) -> Response:
        """A running answer is stopped first, so that its end is not kept after."""
        owner, record = await self.kept.record(request, protocol)
        state = self.kept.codecs[protocol][1]
        id = state.record_id(record)
        if state.running(record):
            await self._stop(id, owner)
            await self._final(protocol, state, id, owner)
        return await self.kept.delete(state, id, owner)

    async def _get(self, request: Request, protocol: str) -> Any:
        owner, record = await self.kept.record(request, protocol)
        state = self.kept.codecs[protocol][1]
        query = request.query_params
        if query.get("stream", "").lower() in ("true", "1"):
            if not state.is_background(record):
                raise state.not_background("streamed")
            after = 0
            text = query.get("starting_after")
            if text is not None:
                number = decimal(text)
                if number is None:
                    raise GatewayError(
                        "invalid_request",
                        "'starting_after' must be a sequence number (ASCII digits).",
                        param="starting_after",
                        code="invalid_value",
                    )
                after = number + 1  # the event numbered N is the stream's frame N + 1
            stream = await self.host.hub.find(state.record_id(record), owner)
            return self.host.attach(stream, after)
        return JSONResponse(await self._view(state, record, owner))

    async def _view(self, state: StateCodec, record: dict[str, Any], owner: str) -> Any:
        if not state.running(record):
            return state.view(record)
        begun = await self._begun(state.record_id(record), owner)
        return state.lost(record) if begun is None else state.progress(record, begun)

    async def _begun(self, id: str, owner: str) -> bool | None:
        """Whether the running answer ``id`` has begun (a frame exists); None when no
        replica produces it any more."""
        hub = self.host.hub
        local = hub.local(id)
        if local is not None and local.owner == owner:
            return local.done or local.last_seq > 0
        if hub.mirror is None:
            return None
        try:
            remote = await hub.mirror.find(id, owner)
        except GatewayError:  # Redis does not answer: not taken for lost on a doubt
            return True
        if remote is None:
            return None
        if remote.done:
            return True  # (its final record is being written)
        return remote.last > 0 if await hub.mirror.producing(id) else None

    async def _cancel(self, request: Request, protocol: str) -> Response:
        owner, record = await self.kept.record(request, protocol)
        state = self.kept.codecs[protocol][1]
        if not state.is_background(record):
            raise state.not_background("cancelled")
        id = state.record_id(record)
        if state.running(record):
            await self._stop(id, owner)
            record = await self._final(protocol, state, id, owner) or record
        return JSONResponse(await self._view(state, record, owner))

    async def _stop(self, id: str, owner: str) -> None:
        """The hub's stop, where the answer is produced; then its production's end, here."""
        try:
            stream = await self.host.hub.find(id, owner)
        except GatewayError:  # evicted, or nobody produces it: nothing to stop
            return
        await stream.stop()
        task = self._runs.get(id)
        if task is not None:
            await asyncio.wait({task}, timeout=CANCEL_WAIT)

    async def _final(
        self, protocol: str, state: StateCodec, id: str, owner: str
    ) -> dict[str, Any] | None:
        """The record once it is no longer running (another replica writes it to the
        database a moment after its stop), or the last one seen after ``CANCEL_WAIT``."""
        deadline = time.monotonic() + CANCEL_WAIT
        found = await self.kept.find(protocol, id, owner)
        while found is not None and state.running(found) and time.monotonic() < deadline:
            if await self._begun(id, owner) is None:
                break  # nobody will write it
            await asyncio.sleep(POLL)
            found = await self.kept.find(protocol, id, owner)
        return found
