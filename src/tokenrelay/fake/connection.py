"""One client connection of the fake upstream: an ``asyncio.Protocol`` that parses
requests with httptools and writes replies, one at a time, with no awaits.

Keep-alive and pipelining: complete requests queue until the response before them is
done. A stream reply is a precomputed list of chunk-framed events that ``_pump`` writes
one per ``transport.write`` in a plain loop, stopping only when the transport asks it to
(``pause_writing``) or for a ``gap`` timer (``loop.call_later``). The client closing is
seen at once (``eof_received`` / ``connection_lost``): timers are cancelled, nothing more
is produced, and the log record gets its end time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import cast

import httptools

from .httpio import Reply, Request, RequestRecord, response_head
from .plan import TERMINATOR
from .routes import Router
from .wire import error_body

__all__ = ["MAX_BODY", "Connection"]

logger = logging.getLogger("tokenrelay.fake")

MAX_BODY = 64 * 1024 * 1024
"""Largest request body accepted (413 beyond)."""

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _BadRequest:
    """A request that could not be parsed; answered with ``status`` and a close."""

    __slots__ = ("message", "status")

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


class Connection(asyncio.Protocol):
    """One client connection: parse, route, write; one response at a time."""

    def __init__(self, router: Router, conns: set[Connection]) -> None:
        self._router = router
        self._conns = conns
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._parse_failed = False
        # the request being parsed
        self._url: list[bytes] = []
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._started = 0.0
        self._pending: deque[Request | _BadRequest] = deque()
        # the response being written
        self._busy = False
        self._record: RequestRecord | None = None
        self._keep_alive = True
        self._chunked = True
        self._chunks: list[bytes] = []
        self._idx = 0
        self._gap = 0.0
        self._end = "finish"
        self._streaming = False
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._closed = False
        self._server_closing = False

    # --- transport callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._conns.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._busy:
            record = self._record
            if record is not None and record.ended is None:
                record.ended = time.time()
                record.client_closed = not self._server_closing
            self._settle()

    def eof_received(self) -> bool:
        # The client shut its side: nobody will read the rest. Closing now (False) makes
        # connection_lost record the time, also for a stalled response.
        return False

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._streaming and self._timer is None and not self._closed:
            self._pump()

    def data_received(self, data: bytes) -> None:
        if self._parse_failed or self._closed:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail_parse(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._fail_parse(400, f"malformed HTTP request: {exc}")
        if not self._busy:
            self._next()

    def _fail_parse(self, status: int, message: str) -> None:
        self._parse_failed = True
        self._pending.append(_BadRequest(status, message))

    # --- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = []
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._started = time.time()

    def on_url(self, url: bytes) -> None:
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        if self._headers.get("expect", "").lower() == "100-continue" and not self._busy:
            assert self._transport is not None
            self._transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size <= MAX_BODY:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._body_size > MAX_BODY:
            self._pending.append(_BadRequest(413, f"request body over {MAX_BODY} bytes"))
            return
        self._pending.append(
            Request(
                method=self._parser.get_method().decode("latin-1"),
                url=b"".join(self._url),
                headers=self._headers,
                body=b"".join(self._body),
                started=self._started,
                keep_alive=self._parser.should_keep_alive(),
                http11=self._parser.get_http_version() == "1.1",
            )
        )

    # --- responses ------------------------------------------------------------------------

    def _next(self) -> None:
        while not self._busy and self._pending and not self._closed:
            self._begin(self._pending.popleft())

    def _begin(self, req: Request | _BadRequest) -> None:
        if isinstance(req, _BadRequest):
            self._pending.clear()
            reply = Reply(status=req.status, body=error_body("openai", req.status, req.message))
            record = None
            keep_alive, http11 = False, True
        else:
            keep_alive, http11 = req.keep_alive, req.http11
            try:
                reply, record = self._router.handle(req)
            except Exception:  # a bug in a route must cost one request, not the server
                logger.exception("fake upstream: route failed for %r", req.url)
                reply = Reply(status=500, body=error_body("openai", 500, "fake upstream bug"))
                record = None
            if record is not None:
                self._router.record(record)
        self._busy = True
        self._record = record
        self._keep_alive = keep_alive
        self._idx = 0
        if reply.head_delay > 0:
            self._timer = self._loop.call_later(reply.head_delay, self._respond, reply, http11)
        else:
            self._respond(reply, http11)

    def _respond(self, reply: Reply, http11: bool) -> None:
        self._timer = None
        if self._closed:
            return
        if reply.stream is not None:
            self._start_stream(reply, http11)
        elif reply.delay > 0:
            self._timer = self._loop.call_later(reply.delay, self._send_plain, reply)
        else:
            self._send_plain(reply)

    def _send_plain(self, reply: Reply) -> None:
        self._timer = None
        if reply.end == "stall" or self._closed:
            return
        assert self._transport is not None
        body = reply.body
        head = response_head(
            reply.status,
            reply.content_type,
            length=len(body),
            keep_alive=self._keep_alive,
            headers=reply.headers,
        )
        if reply.end == "drop":
            self._transport.write(head + body[: len(body) // 2])
            self._drop()
        else:
            self._transport.write(head + body)
            self._finish()

    def _start_stream(self, reply: Reply, http11: bool) -> None:
        assert self._transport is not None and reply.stream is not None
        plan = reply.stream
        self._chunked = http11
        self._chunks = plan.framed if http11 else plan.events
        self._end = plan.end
        self._gap = reply.gap
        if not http11:
            self._keep_alive = False  # an HTTP/1.0 stream ends by closing
        head = response_head(
            reply.status,
            reply.content_type,
            length=None,
            chunked=http11,
            keep_alive=self._keep_alive,
            headers=reply.headers,
        )
        if reply.delay > 0:
            self._transport.write(head)
            self._timer = self._loop.call_later(reply.delay, self._first)
            return
        self._streaming = True
        if self._chunks:
            self._transport.write(head + self._chunks[0])
            self._idx = 1
            if self._gap > 0 and len(self._chunks) > 1:
                self._timer = self._loop.call_later(self._gap, self._pump)
                return
        else:
            self._transport.write(head)
        self._pump()

    def _first(self) -> None:
        self._streaming = True
        self._pump()

    def _pump(self) -> None:
        """Write events until the stream ends, the transport pauses us, or a gap."""
        self._timer = None
        transport = self._transport
        assert transport is not None
        chunks = self._chunks
        count = len(chunks)
        i = self._idx
        gap = self._gap
        while not self._paused:
            if i >= count:
                self._idx = i
                self._stream_done()
                return
            if transport.is_closing():
                break
            transport.write(chunks[i])
            i += 1
            if gap > 0 and i < count:
                self._timer = self._loop.call_later(gap, self._pump)
                break
        self._idx = i
        if self._record is not None:
            self._record.events_sent = i

    def _stream_done(self) -> None:
        self._streaming = False
        if self._end == "finish":
            if self._chunked:
                assert self._transport is not None
                self._transport.write(TERMINATOR)
            self._finish()
        elif self._end == "drop":
            self._drop()
        elif self._record is not None:  # stall: wait for the client to go away
            self._record.events_sent = self._idx

    def _finish(self) -> None:
        record = self._record
        if record is not None:
            record.ended = time.time()
            record.complete = True
        self._settle()
        self._busy = False
        self._record = None
        if self._keep_alive:
            self._next()
        else:
            self._close()

    def _drop(self) -> None:
        record = self._record
        if record is not None:
            record.ended = time.time()
        self._settle()
        self._busy = False
        self._record = None
        self._close()

    def _settle(self) -> None:
        self._router.events_sent += self._idx
        if self._record is not None:
            self._record.events_sent = self._idx
        self._idx = 0
        self._streaming = False

    def _close(self) -> None:
        self._server_closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection at once (server shutdown)."""
        self._server_closing = True
        if self._transport is not None:
            self._transport.abort()
