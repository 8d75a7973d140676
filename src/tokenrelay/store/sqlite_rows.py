"""Usage rows into a SQLite file in one hop to a thread.

Through SQLAlchemy's async engine and aiosqlite, a batch of usage rows cost the event
loop ~15 µs per row (parameter processing, and a thread round trip for each of BEGIN,
the insert and COMMIT), in bursts of milliseconds that delayed whatever request arrived
meanwhile; plain ``sqlite3`` does the same batch in ~7 µs per row. So the usage writer's
batches to a SQLite file go here: the event loop builds one tuple per row, and one
worker thread runs BEGIN, ``executemany``, COMMIT on its own connection to the file
(``sqlite3`` lets go of the GIL while SQLite works). The engine's connections read the
rows once committed; WAL and a busy timeout let both connections write the same file.

On Linux that thread runs at nice 19: a batch is ~2 ms of CPU, and at the event loop's
priority it shared the core with the requests that came meanwhile (every 100th request
at concurrency 1 had its first token 2-4 ms late). Below it, the batch waits for the
loop's idle moments. A gateway that keeps every core busy therefore writes usage at the
pace its spare cycles allow; the rows wait in the writer's queue (and spill to disk past
``usage.spool_max_rows``), none is lost.

Values are stored as SQLAlchemy stores them (``DateTime`` as its text format, booleans
as 0/1), so every reader of the table sees the same rows whichever path wrote them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from operator import attrgetter
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from .schema import usage
from .usage import UsageRow

COLUMNS = tuple(c.name for c in usage.columns if c.name != "id")
assert COLUMNS[-1] == "created_at"  # formatted apart, below
_INSERT = (
    f"INSERT INTO usage ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (request_id) DO NOTHING"
)
_values = attrgetter(*COLUMNS[:-1])


def _params(row: UsageRow) -> tuple[Any, ...]:
    # SQLAlchemy's text for a DateTime on SQLite: "2026-11-21 12:00:00.000000"
    return (*_values(row), row.created_at.isoformat(" ", "microseconds"))


def _below_the_loop() -> None:
    """Lower the calling thread's priority (Linux: nice applies per thread)."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):  # not allowed: it runs at the loop's priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class SQLiteRows:
    """Inserts usage rows into one SQLite file from a thread of its own."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(
            1, thread_name_prefix="tokenrelay-usage-sqlite", initializer=_below_the_loop
        )
        self._conn: sqlite3.Connection | None = None

    @classmethod
    def for_engine(cls, engine: AsyncEngine) -> SQLiteRows | None:
        """One for the engine's database if it is a plain SQLite file; None otherwise
        (PostgreSQL, an in-memory database, a URL with options: the engine's own path)."""
        url = engine.url
        database = url.database or ""
        if url.get_backend_name() != "sqlite" or url.query or database in ("", ":memory:"):
            return None
        return cls(database)

    async def insert(self, rows: Sequence[UsageRow]) -> None:
        """Insert ``rows`` in one transaction; a ``request_id`` already stored (or
        earlier in ``rows``) is skipped. Raises ``sqlite3.Error``."""
        params = [_params(row) for row in rows]
        await asyncio.get_running_loop().run_in_executor(self._executor, self._insert, params)

    def _insert(self, params: list[tuple[Any, ...]]) -> None:
        conn = self._conn
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._conn = conn
        try:
            conn.execute("BEGIN")
            conn.executemany(_INSERT, params)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)
