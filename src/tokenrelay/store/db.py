"""Database URLs and engines: SQLite through aiosqlite (the default, a file) and
PostgreSQL through asyncpg.

SQLite is set up for a server that writes while a CLI reads: WAL journal, a busy
timeout instead of instant "database is locked" errors, and SQLAlchemy's recipe for real
transactions (the driver's own implicit BEGIN is switched off and SQLAlchemy emits
``BEGIN``, or ``BEGIN IMMEDIATE`` when a connection asks for it with the
``sqlite_begin`` execution option — the migrations do, to hold the write lock while
they read the schema version).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from typing import Any

import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

DEFAULT_URL = "sqlite:///./tokenrelay.db"

DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.DBAPIError,  # every driver error SQLAlchemy wraps (asyncpg, sqlite3)
    sqlite3.Error,  # the usage batches written to SQLite without SQLAlchemy (sqlite_rows.py)
    sqlalchemy.exc.TimeoutError,  # no pooled connection in time
    OSError,  # refused or reset connections raised before the driver wraps them
    asyncio.TimeoutError,  # asyncpg connect / command timeouts
)
"""The errors that mean "the database is unavailable or failing", for callers (the usage
writer) that must survive an outage."""


def async_url(url: str | None) -> str:
    """The SQLAlchemy async URL for a user's database URL.

    ``postgresql://`` and ``postgres://`` become ``postgresql+asyncpg://``;
    ``sqlite:///path`` becomes ``sqlite+aiosqlite:///path``; a bare path is a SQLite
    file; a URL that already names a driver is kept as it is.
    """
    url = (url or DEFAULT_URL).strip()
    if "://" not in url:
        return f"sqlite+aiosqlite:///{url}"
    scheme, rest = url.split("://", 1)
    if "+" in scheme:
        return url
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    if scheme == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use sqlite:// or postgresql://")


def redact(url: str) -> str:
    """The URL with its password hidden, for messages."""
    return make_url(async_url(url)).render_as_string(hide_password=True)


def create_engine(url: str | None, **options: Any) -> AsyncEngine:
    """An async engine for ``url`` (see ``async_url``), set up for its dialect."""
    full = make_url(async_url(url))
    if full.get_backend_name() == "sqlite":
        database = full.database or ""
        if database and database != ":memory:":
            directory = os.path.dirname(os.path.abspath(database))
            os.makedirs(directory, exist_ok=True)
        engine = create_async_engine(full, connect_args={"timeout": 30}, **options)
        _sqlite_setup(engine)
        return engine
    connect_args = {"timeout": 10, "command_timeout": 60}
    return create_async_engine(
        full, connect_args=connect_args, pool_pre_ping=True, pool_recycle=1800, **options
    )


def _sqlite_setup(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))
