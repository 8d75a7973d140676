"""Running the gateway: uvicorn with a drain on shutdown.

On SIGTERM (or Ctrl-C) the server stops accepting connections, answers new requests on
open connections with 503, lets the streams being produced finish for up to
``shutdown_drain`` seconds, then ends the rest with an error frame (code
``shutting_down``) from which a client can resume on another replica.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket

import uvicorn

from .app import Front
from .channel import GatewayProtocol
from .connections import Guard
from .relay import Gateway


class GatewayServer(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, gateway: Gateway, drain: float, ready: int | None = None
    ) -> None:
        super().__init__(config)
        self.gateway = gateway
        self.drain = drain
        self.ready = ready  # a pipe to write one byte to once serving (workers.py)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Everything loaded and built at start-up lives as long as the process: move it
        # out of the cyclic collector's sight, so a full collection walks only what the
        # requests made (measured: full collections under 500 streams took up to 73 ms,
        # a stall of every stream; see bench/RESULTS.md).
        gc.collect()
        gc.freeze()
        if self.ready is not None:
            with contextlib.suppress(OSError):  # a master that stopped waiting
                os.write(self.ready, b"1")
            os.close(self.ready)
            self.ready = None

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.gateway.draining = True
        for server in self.servers:
            server.close()
        await self.gateway.hub.drain(self.drain)
        await super().shutdown(sockets)


def serve(
    app: Front,
    host: str,
    port: int,
    log_level: str,
    drain: float,
    sockets: list[socket.socket] | None = None,
    ready: int | None = None,
) -> None:
    """Serve until SIGTERM; on ``sockets`` (inherited from a master) when given."""
    http = app.state.gateway.config.http
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        # uvicorn's httptools protocol, bounded, with a direct channel
        http=GatewayProtocol.guarded(Guard.of(http)),
        timeout_keep_alive=http.idle_timeout,
        access_log=False,  # the gateway logs each request itself, once, when it ends
        proxy_headers=False,  # nothing here uses the client address
        log_level=log_level,
        timeout_graceful_shutdown=5,  # after the drain: for responses still being written
    )
    GatewayServer(config, app.state.gateway, drain, ready).run(sockets)
