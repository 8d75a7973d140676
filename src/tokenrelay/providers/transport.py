"""A minimal HTTP/1.1 client for upstreams: one keep-alive ``Pool`` per provider.

A connection is an ``asyncio.Protocol`` feeding ``httptools``. A request goes out in one
``transport.write``; ``Pool.request`` returns at the response head. Each network read's
body goes to the consumer with no stream buffer between: one ``bytes``, or what
``Response.decode_with(feed)``'s ``feed`` makes of it (SSE events), so a waiting consumer
is woken once per read, only when something whole came. Reading pauses while over
``HIGH_WATER`` bytes wait. Connections are reused only after a response read to its
end; ``Response.close()`` before that aborts at once. A drop mid-body raises
``TransportError`` from ``next()`` after what came before it. No gzip (``identity``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httptools

__all__ = ["HIGH_WATER", "ConnectTimeout", "Pool", "Response", "TransportError"]

HIGH_WATER = 256 * 1024  # body bytes waiting for the consumer: above, reading pauses

_Key = tuple[str, str, int]  # scheme, host, port
_SAFE = "/:@!$&'()*+,;=?%[]~"  # kept as-is in a request target (the rest is %-encoded)
_OURS = ("content-length", "transfer-encoding", "connection")  # set here, not by callers
_USER_AGENT = "User-Agent: tokenrelay\r\n"


def _parse(url: str) -> tuple[_Key, str, str]:
    """(origin, request target, Host header) of ``url``."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https") or not host:
        raise TransportError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if scheme == "https" else 80)
    target = quote(parts.path or "/", safe=_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_SAFE)
    return (scheme, host, port), target, parts.netloc.rpartition("@")[2]


class TransportError(Exception):
    """Connect, TLS, reset, a drop mid-body, a malformed response."""


class ConnectTimeout(TransportError, TimeoutError):
    pass


class Response:
    """A response past its head: ``next()`` (or ``read()``) the body, then ``close()``."""

    def __init__(self, conn: _Conn, head: asyncio.Future[None], reused: bool) -> None:
        self._conn: _Conn | None = conn
        self._head = head
        self.reused = reused  # whether the connection came from the pool
        self.local_address = conn.local  # of the connection
        self.status = 0
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._interim = False  # parsing a 1xx response
        self._feed: Callable[[bytes], list[Any]] | None = None
        self._ready: list[Any] = []
        self._buffered = 0
        self._complete = False
        self._reusable = False
        self._error: TransportError | None = None
        self._waiter: asyncio.Future[None] | None = None

    def header(self, name: str) -> str | None:
        """A header's value (any case; repeated fields joined with ``", "``)."""
        key = name.lower().encode("latin-1")
        found = [v.decode("latin-1") for n, v in self._raw_headers if n.lower() == key]
        return ", ".join(found) if found else None

    def decode_with(self, feed: Callable[[bytes], list[Any]]) -> None:
        """Pass each read through ``feed`` from now on (what came already first);
        ``next()`` then returns ``feed``'s results."""
        raw, self._ready = self._ready, []
        for chunk in raw:
            self._ready += feed(chunk)
        self._feed = feed

    async def next(self) -> list[Any] | None:
        """All received since the last call (one or more items), ``None`` at the end.
        ``TransportError`` if the connection failed (after all received before that)."""
        while True:
            ready = self._ready
            if ready:
                self._ready = []
                self._buffered = 0
                conn = self._conn
                if conn is not None and conn.reading_paused:
                    conn.resume_reading()
                return ready
            if self._error is not None:
                raise self._error
            if self._complete:
                return None
            if self._conn is None:
                raise TransportError("the response was closed")
            waiter = self._waiter = self._conn.loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    async def read(self, limit: int = 1 << 24) -> bytes:
        """The raw body, or its first ``limit`` bytes (not after ``decode_with``)."""
        data = b""
        while len(data) < limit and (chunks := await self.next()) is not None:
            data += b"".join(chunks)
        return data[:limit]

    def close(self) -> None:
        """Release the connection (body read to its end) or abort it (idempotent)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.response = None
            if self._complete and self._reusable and self._error is None:
                conn.pool._release(conn)
            else:
                conn.abort()

    def _wake(self) -> None:
        waiter = self._waiter
        news = self._ready or self._complete or self._error is not None
        if news and waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: TransportError) -> None:
        if not self._complete and self._error is None:
            self._error = error
        self._reusable = False
        if not self._head.done():
            self._head.set_exception(error)
        self._wake()


class _Conn(asyncio.Protocol):
    """One connection: the parser's callbacks fill the current ``Response``."""

    def __init__(self, pool: Pool, key: _Key, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.key = key
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.body: list[bytes] = []  # body pieces of the read being parsed
        self.local: Any = None
        self.closed = False
        self.idle_since = 0.0
        self.reading_paused = False
        self.drain: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.local = transport.get_extra_info("sockname")
        self.pool._conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._conns.discard(self)
        self.resume_writing()
        r = self.response
        if r is None or r._complete:
            return
        framed = r.header("content-length") or r.header("transfer-encoding")
        if exc is None and r._head.done() and not framed:
            r._complete = True  # a body delimited by the end of the connection
            return r._wake()
        where = "mid-body" if r._head.done() else "before the response head"
        detail = f": {exc}" if exc is not None else ""
        r._fail(TransportError(f"the upstream closed the connection {where}{detail}"))

    def pause_writing(self) -> None:
        if self.drain is None:
            self.drain = self.loop.create_future()

    def resume_writing(self) -> None:
        drain, self.drain = self.drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        r = self.response
        if r is None:  # bytes on an idle connection: nothing can be trusted on it
            self.abort()
            return
        body = self.body
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            r._fail(TransportError(f"malformed response from the upstream: {exc!r}"))
            self.abort()
        if body:  # the body bytes of this read (several HTTP chunks: joined once)
            data = body[0] if len(body) == 1 else b"".join(body)
            body.clear()
            feed = r._feed
            if feed is None:
                r._ready.append(data)
            elif items := feed(data):
                r._ready += items
            r._buffered += len(data)
            if r._buffered > HIGH_WATER and r._ready and not self.reading_paused:
                self.reading_paused = True
                assert self.transport is not None
                self.transport.pause_reading()
        r._wake()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        r = self.response
        assert r is not None
        status = self.parser.get_status_code()
        if status < 200:  # 1xx: an interim response; the real one follows
            r._interim = True
            r._raw_headers = []
            return
        r.status = status
        encoding = r.header("content-encoding")
        if encoding and encoding.lower() != "identity":  # we asked for identity
            r._fail(TransportError(f"unsupported Content-Encoding {encoding}"))
            raise TransportError("stop")  # stops the parser
        if not r._head.done():
            r._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        r = self.response
        assert r is not None
        if r._interim:
            r._interim = False
        elif r._complete:  # a second response nobody asked for
            r._reusable = False
        else:
            r._complete = True
            r._reusable = self.parser.should_keep_alive()

    def resume_reading(self) -> None:
        self.reading_paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Pool:
    """Keep-alive connections to the origins of one provider."""

    def __init__(
        self,
        *,
        connect_timeout: float | None = 10.0,
        max_idle: int = 1024,
        idle_timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle  # per origin
        self.idle_timeout = idle_timeout
        self._ssl = ssl_context  # default: the system's trust store
        self._idle: dict[_Key, deque[_Conn]] = {}
        self._conns: set[_Conn] = set()
        self._targets: dict[str, tuple[_Key, str, str]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def idle_count(self) -> int:
        return sum(map(len, self._idle.values()))

    def _head(
        self, method: str, url: str, headers: Mapping[str, str], size: int
    ) -> tuple[_Key, bytes]:
        found = self._targets.get(url)
        if found is None:
            if len(self._targets) >= 1024:
                self._targets.clear()
            found = self._targets[url] = _parse(url)
        key, target, host = found
        lines = [f"{method} {target} HTTP/1.1\r\n"]
        defaults = {
            "host": f"Host: {host}\r\n",
            "accept-encoding": "Accept-Encoding: identity\r\n",
            "user-agent": _USER_AGENT,
        }
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
                raise ValueError(f"invalid character in header {name!r}")
            lower = name.lower()
            if lower not in _OURS:
                defaults.pop(lower, None)
                lines.append(f"{name}: {value}\r\n")
        lines += defaults.values()
        lines.append(f"Content-Length: {size}\r\n\r\n")
        return key, "".join(lines).encode()

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> Response:
        """Send a request; return at the response head (then ``Response.close()`` it).
        Raises ``TransportError`` (``ConnectTimeout``); ``ValueError`` for a bad header."""
        key, head = self._head(method, url, headers, len(body))
        loop = asyncio.get_running_loop()
        conn = self._take(key, loop)
        reused = conn is not None
        conn = conn or await self._connect(key, loop)
        response = conn.response = Response(conn, conn.loop.create_future(), reused)
        try:
            assert conn.transport is not None
            conn.transport.write(head + body)
            if conn.drain is not None:
                await conn.drain
            await response._head
        except BaseException:
            response.close()
            raise
        return response

    def _take(self, key: _Key, loop: asyncio.AbstractEventLoop) -> _Conn | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()  # the most recently used first
            if conn.loop is not loop:  # left by another event loop (tests): unusable here
                continue
            stale = conn.idle_since < loop.time() - self.idle_timeout
            if stale or conn.closed or conn.transport is None or conn.transport.is_closing():
                conn.abort()
                continue
            return conn
        return None

    async def _connect(self, key: _Key, loop: asyncio.AbstractEventLoop) -> _Conn:
        scheme, host, port = key
        context = None
        if scheme == "https":
            context = self._ssl = self._ssl or ssl.create_default_context()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Conn(self, key, loop), host, port, ssl=context,
                    server_hostname=host if context is not None else None,
                )  # fmt: skip
        except TimeoutError:
            raise ConnectTimeout(
                f"no connection to {host}:{port} within {self.connect_timeout:g}s"
            ) from None
        except OSError as exc:  # ssl.SSLError included
            raise TransportError(f"cannot connect to {host}:{port}: {exc}") from None
        return conn

    def _release(self, conn: _Conn) -> None:
        if conn.reading_paused:
            conn.resume_reading()
        idle = self._idle.setdefault(conn.key, deque())
        if conn.closed or len(idle) >= self.max_idle:
            conn.abort()
            return
        conn.idle_since = now = conn.loop.time()
        idle.append(conn)
        if self._sweeper is None or self._sweeper.when() < now - 1:  # none, or a dead loop's
            self._sweeper = conn.loop.call_later(self.idle_timeout, self._sweep, conn.loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the connections idle longer than ``idle_timeout``."""
        self._sweeper = None
        oldest = loop.time() - self.idle_timeout
        for key, idle in list(self._idle.items()):
            while idle and (idle[0].closed or idle[0].idle_since <= oldest):
                idle.popleft().abort()
            if not idle:
                del self._idle[key]
        if self._idle:
            self._sweeper = loop.call_later(self.idle_timeout / 2, self._sweep, loop)

    async def aclose(self) -> None:
        """Abort every connection, idle or in use (the pool stays usable)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._idle.clear()
        for conn in list(self._conns):
            conn.abort()
        await asyncio.sleep(0)  # let connection_lost run
