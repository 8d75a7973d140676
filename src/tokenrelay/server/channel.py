"""The client connection under a streaming response, written to without a task switch.

uvicorn serves the gateway through ``GatewayProtocol``: its httptools HTTP/1.1 protocol,
plus a ``Channel`` per connection, offered to each HTTP/1.1 request as the ASGI scope
extension ``"tokenrelay.channel"``. A streaming response that has sent its headers
(with ``transfer-encoding: chunked``) writes body chunks on the channel synchronously,
from the stream's producer as it publishes, instead of waking its own task for every
chunk; and it hears at once, by a callback, when the client goes away, instead of
keeping a task waiting on ``receive()``.

Only the asyncio protocol interface (``connection_made``/``connection_lost``,
``pause_writing``/``resume_writing``) and the scope are used. Under another server the
extension is absent and responses take the plain ASGI way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .connections import GuardedProtocol

EXTENSION = "tokenrelay.channel"


class Channel:
    """Writes chunked body pieces straight to the transport while it takes them."""

    __slots__ = ("_on_lost", "lost", "paused", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.paused = False  # the transport's buffer is over its high-water mark
        self.lost = False
        self._on_lost: Callable[[], None] | None = None

    def write(self, data: bytes) -> bool:
        """One chunk of the body; False (nothing written) when the connection pushes
        back or is gone: the caller then writes through ASGI ``send``, which waits."""
        if self.paused or self.lost or self.transport.is_closing():
            return False
        self.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        return True

    def watch(self, on_lost: Callable[[], None] | None) -> None:
        """Call ``on_lost`` when the client goes away (None: stop watching)."""
        self._on_lost = on_lost

    def connection_lost(self) -> None:
        self.lost = True
        on_lost, self._on_lost = self._on_lost, None
        if on_lost is not None:
            on_lost()


def channel_of(scope: Any) -> Channel | None:
    extensions = scope.get("extensions")
    return extensions.get(EXTENSION) if extensions else None


class GatewayProtocol(GuardedProtocol):
    """uvicorn's httptools protocol, bounded (``connections.py``), offering each
    HTTP/1.1 request its ``Channel``."""

    channel: Channel

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.channel = Channel(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.channel.connection_lost()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        self.channel.paused = True
        super().pause_writing()

    def resume_writing(self) -> None:
        self.channel.paused = False
        super().resume_writing()

    def on_headers_complete(self) -> None:
        # chunked framing is HTTP/1.1's; a 1.0 client gets the ASGI way
        if self.parser.get_http_version() == "1.1":
            scope: dict[str, Any] = self.scope  # type: ignore[assignment]
            scope.setdefault("extensions", {})[EXTENSION] = self.channel
        super().on_headers_complete()
