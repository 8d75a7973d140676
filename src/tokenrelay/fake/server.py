"""The fake upstream's HTTP/1.1 server: ``asyncio.Protocol`` + httptools, no framework.

``start()`` listens on the running loop (uvloop when the process runs one: the CLI does)
and returns a ``FakeUpstream``; each connection is a ``connection.Connection``, each
request is routed by ``routes.Router`` to a reply whose stream bytes were precomputed
(``plan.StreamPlan``), and written one SSE event per ``transport.write``.

Speed: about 350,000 SSE events (HTTP chunks) per second of one core, i.e. 200
concurrent streams of 200 chunks (40,000 events) cost it about 0.11 s of CPU. Measured
with ``python -m tokenrelay.fake.selftest`` (defaults: 200 keep-alive connections each
requesting ``gen/200`` streams back to back for 5 s, OpenAI route, no pauses): the server
runs as ``python -m tokenrelay.fake`` pinned to one CPU with uvloop, the load generator
(a bare ``asyncio.Protocol`` that only looks for the chunked terminator) is pinned to the
other; events written divided by the server's own CPU time (``time.process_time``, read
from ``GET /_fake/stats`` before and after) gave 343k-383k events per CPU-second over
six runs on a 2-core VM that other jobs were also using (254k in one noisy run). Each
event is one ``transport.write`` and in practice one ``send`` system call, which is most
of the cost.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import TracebackType

from .connection import Connection
from .httpio import RequestRecord
from .routes import Router

__all__ = ["FakeUpstream", "start"]


class FakeUpstream:
    """A running fake upstream. ``log`` lists a ``RequestRecord`` per request (oldest
    first, ``/_fake/*`` routes excluded); ``reset()`` clears it and the ``fail_times``
    counters. Use ``start()`` to make one; ``async with`` closes it."""

    def __init__(self, server: asyncio.Server, router: Router, conns: set[Connection]) -> None:
        self._server = server
        self._router = router
        self._conns = conns
        sockname = server.sockets[0].getsockname()
        self.host: str = str(sockname[0])
        self.port: int = int(sockname[1])

    @property
    def base_url(self) -> str:
        """``http://host:port`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def log(self) -> list[RequestRecord]:
        """The request log (a live list)."""
        return self._router.log

    @property
    def attempts(self) -> dict[str, int]:
        """Requests seen per model string (what ``fail_times`` counts)."""
        return self._router.attempts

    @property
    def fixtures(self) -> Path | None:
        """The folder ``replay/`` models read from."""
        return self._router.fixtures

    def reset(self) -> None:
        """Clear the log and the ``fail_times`` counters."""
        self._router.reset()

    async def close(self) -> None:
        """Stop listening and drop every open connection."""
        self._server.close()
        for conn in list(self._conns):
            conn.abort()
        await self._server.wait_closed()

    async def __aenter__(self) -> FakeUpstream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def start(
    host: str = "127.0.0.1",
    port: int = 0,
    fixtures: Path | None = None,
    *,
    log_limit: int = 10_000,
    backlog: int = 2048,
) -> FakeUpstream:
    """Start a fake upstream on the running loop (``port=0``: any free port).

    ``fixtures`` is the folder of recorded streams (``<provider>/<stem>.sse``) that
    ``replay/`` models read; ``log_limit`` bounds the log (0: keep none).
    """
    router = Router(Path(fixtures) if fixtures is not None else None, log_limit)
    conns: set[Connection] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Connection(router, conns), host, port, backlog=backlog, reuse_address=True
    )
    return FakeUpstream(server, router, conns)
