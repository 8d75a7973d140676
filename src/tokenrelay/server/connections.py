"""What a connection may cost before it has sent a whole request's headers.

uvicorn's httptools protocol has no limit on header size (httptools buffers a header of
any length), no deadline for the headers, and arms its keep-alive timer only after a
response, so a connection that never sends a byte stays open for ever. ``GuardedProtocol``
adds, per connection:

- at most ``max_connections_per_client`` connections open at once from one address
  (not counting ``uncapped_clients``: by default loopback, the machine's own tools and
  a reverse proxy on this host, which bounds its own clients); one over gets 429 and is
  closed;
- ``idle_timeout`` seconds with no request in flight (from the connection's start, and
  after each response) before it is closed;
- ``header_timeout`` seconds from the first byte after a response (or the connection's
  start) until a request's headers are complete: a slow sender ("slowloris") gets 408
  and is closed. The rest of a body the gateway answered without reading (a 401 before
  the body) is discarded as it comes, not stored, within the same deadline;
- ``max_header_bytes`` for the request line and headers (counted as they arrive, so
  memory stays bounded by about that plus one read): 431, and closed.

These answers are OpenAI-shaped JSON (the request's protocol is not known yet). While
an application handles a request, none of this applies: streams may last for minutes.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import ClassVar

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..config import HttpConfig

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class Guard:
    """The limits, and the count of open connections per client address (one per
    server: every connection of that server shares it)."""

    max_per_client: int = 256
    uncapped: tuple[Network, ...] = ()
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0
    idle_timeout: float = 5.0
    open: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, http: HttpConfig) -> Guard:
        return cls(
            http.max_connections_per_client,
            tuple(ipaddress.ip_network(n, strict=False) for n in http.uncapped_clients),
            http.max_header_bytes,
            http.header_timeout,
            http.idle_timeout,
        )

    def capped(self, address: str) -> bool:
        if self.max_per_client <= 0:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return True
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # (a dual-stack socket's view of an IPv4 client)
        return not any(ip in network for network in self.uncapped)

    def enter(self, address: str) -> bool:
        """Count one more connection from ``address``; False when it is one too many."""
        n = self.open.get(address, 0)
        if n >= self.max_per_client:
            return False
        self.open[address] = n + 1
        return True

    def leave(self, address: str) -> None:
        n = self.open.get(address, 0) - 1
        if n > 0:
            self.open[address] = n
        else:
            self.open.pop(address, None)


def refusal(status: int, message: str, code: str, extra: bytes = b"") -> bytes:
    """A whole HTTP/1.1 response that closes the connection, with an OpenAI-shaped body."""
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    body = msgspec.json.encode({"error": error})
    phrase = HTTPStatus(status).phrase.encode()
    return (
        b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n%b\r\n%b" % (status, phrase, len(body), extra, body)
    )


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of the module's docstring."""

    guard: ClassVar[Guard] = Guard()

    _deadline: asyncio.TimerHandle | None = None
    _in_headers = False  # a request has begun and its headers are not complete
    _header_bytes = 0
    _counted: str | None = None  # the client address this connection is counted under
    _refused = False

    @classmethod
    def guarded(cls, guard: Guard) -> type[GuardedProtocol]:
        """This protocol class with ``guard`` (uvicorn makes one instance per connection)."""
        return type(cls.__name__, (cls,), {"guard": guard})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        address = self.client[0] if self.client else None
        if address is not None and guard.capped(address):
            if not guard.enter(address):
                self._refuse(
                    429,
                    f"Too many connections from {address}: at most {guard.max_per_client}.",
                    "too_many_connections",
                    b"retry-after: 1\r\n",
                )
                return
            self._counted = address
        self.timeout_keep_alive_task = self.loop.call_later(
            guard.idle_timeout, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        if self._counted is not None:
            self.guard.leave(self._counted)
            self._counted = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_headers:  # (the read that begins a request is not counted: one read)
            self._header_bytes += len(data)
        super().data_received(data)
        if self._in_headers and self._header_bytes > self.guard.max_header_bytes:
            self._too_large()
        elif (
            self._deadline is None
            and (self.cycle is None or self.cycle.response_complete)
            and not self.transport.is_closing()
        ):
            # bytes came and no request is being handled: its headers' time starts (a
            # read that holds a whole request's headers, the usual case, arms nothing)
            self._deadline = self.loop.call_later(self.guard.header_timeout, self._expired)

    def send_400_response(self, msg: str) -> None:
        if not self._refused and not self.transport.is_closing():
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_headers = False
        self._cancel_deadline()
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.guard.max_header_bytes:
            self._too_large()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._in_headers and self._deadline is None and not self.transport.is_closing():
            # the next request began while this one ran: its headers' time starts now
            self._deadline = self.loop.call_later(self.guard.header_timeout, self._expired)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self._in_headers:
            seconds = self.guard.header_timeout
            self._refuse(
                408, f"The request's headers took longer than {seconds:g} s.", "header_timeout"
            )
        elif not self.transport.is_closing():
            self.transport.close()  # no request came: the rest of a refused body, or noise

    def _too_large(self) -> None:
        limit = self.guard.max_header_bytes
        self._refuse(
            431,
            f"The request's headers are larger than the limit of {limit} bytes.",
            "request_header_fields_too_large",
        )

    def _refuse(self, status: int, message: str, code: str, extra: bytes = b"") -> None:
        """Answer ``status`` and close, unless a response is under way (then just close)."""
        self._refused = True
        self._in_headers = False
        self._cancel_deadline()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(refusal(status, message, code, extra))
        self.transport.close()
