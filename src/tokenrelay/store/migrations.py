"""Schema migrations: an ordered list of versioned steps and a ``schema_version`` table.

Why not alembic: the schema is two tables that must be created the same way on SQLite
and PostgreSQL at every start of the gateway and of the CLI, with no separate tool or
migration directory to ship; a list of functions does that in a page, and a step can
still use any SQLAlchemy DDL. Each step is frozen: it declares the tables as they were
at its version (never the live ``schema`` module), so replaying the list always builds
the same database.

All pending steps run in one transaction (PostgreSQL and SQLite both have
transactional DDL), under a lock so that two processes starting together cannot both
migrate: ``pg_advisory_xact_lock`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine

LOCK_ID = 0x7472_6D69  # "trmi": the PostgreSQL advisory lock held while migrating


class SchemaError(Exception):
    """The database cannot be used by this version of tokenrelay."""


def _version_table(md: MetaData) -> Table:
    return Table(
        "schema_version",
        md,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("name", String(200), nullable=False),
        Column("applied_at", DateTime, nullable=False),
    )


def _v1_keys_and_usage(conn: Connection) -> None:
    md = MetaData()
    Table(
        "api_keys",
        md,
        Column("id", String(32), primary_key=True),
        Column("name", String(200), nullable=False),
        Column("hash", String(64), nullable=False, unique=True),
        Column("prefix", String(32), nullable=False),
        Column("models", JSON, nullable=True),
        Column("rpm", Integer, nullable=True),
        Column("tpm", BigInteger, nullable=True),
        Column("max_concurrent", Integer, nullable=True),
        Column("budget_usd", Float, nullable=True),
        Column("budget_period", String(16), nullable=False),
        Column("expires_at", DateTime, nullable=True),
        Column("created_at", DateTime, nullable=False),
        Column("revoked_at", DateTime, nullable=True),
    )
    Table(
        "usage",
        md,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("request_id", String(64), nullable=False, unique=True),
        Column("key_id", String(32), nullable=True),
        Column("model", String(200), nullable=False),
        Column("provider", String(100), nullable=True),
        Column("deployment", String(200), nullable=True),
        Column("input_tokens", BigInteger, nullable=False),
        Column("output_tokens", BigInteger, nullable=False),
        Column("cached_tokens", BigInteger, nullable=False),
        Column("reasoning_tokens", BigInteger, nullable=False),
        Column("cache_write_tokens", BigInteger, nullable=False),
        Column("cost_usd", Float, nullable=True),
        Column("ttft_ms", Float, nullable=True),
        Column("duration_ms", Float, nullable=False),
        Column("outcome", String(32), nullable=False),
        Column("finish_reason", String(32), nullable=True),
        Column("attempts", Integer, nullable=False),
        Column("resumes", Integer, nullable=False),
        Column("estimated", Boolean, nullable=False),
        Column("created_at", DateTime, nullable=False),
        Index("ix_usage_key_created", "key_id", "created_at"),
        Index("ix_usage_created", "created_at"),
    )
    md.create_all(conn)


def _v2_responses(conn: Connection) -> None:
    md = MetaData()
    Table(
        "responses",
        md,
        Column("id", String(100), primary_key=True),
        Column("owner", String(64), nullable=False),
        Column("record", JSON, nullable=False),
        Column("created_at", DateTime, nullable=False),
        Column("expires_at", DateTime, nullable=False),
        Index("ix_responses_expires", "expires_at"),
    )
    md.create_all(conn)


def _v3_usage_upstream_key(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE usage ADD COLUMN upstream_key_id VARCHAR(64)"))


def _v4_channels(conn: Connection) -> None:
    md = MetaData()
    Table(
        "channels",
        md,
        Column("id", String(32), primary_key=True),
        Column("name", String(100), nullable=False, unique=True),
        Column("protocol", String(32), nullable=False),
        Column("base_url", String(2000), nullable=False),
        Column("models", JSON, nullable=False),
        Column("headers", JSON, nullable=False),
        Column("timeouts", JSON, nullable=False),
        Column("images", Boolean, nullable=False),
        Column("enabled", Boolean, nullable=False),
        Column("created_at", DateTime, nullable=False),
        Column("updated_at", DateTime, nullable=False),
    )
    Table(
        "channel_keys",
        md,
        Column("id", String(32), primary_key=True),
        Column("channel_id", String(32), nullable=False, index=True),
        Column("secret", String(4000), nullable=False),
        Column("last4", String(8), nullable=False),
        Column("created_at", DateTime, nullable=False),
    )
    md.create_all(conn)


def _v5_cache_kinds(conn: Connection) -> None:
    """Usage rows keep their 1-hour cache writes apart (the 5-minute ones are the rest of
    ``cache_write_tokens``) and what the prompt cache saved, in USD."""
    conn.execute(
        text("ALTER TABLE usage ADD COLUMN cache_write_1h_tokens BIGINT NOT NULL DEFAULT 0")
    )
    conn.execute(text("ALTER TABLE usage ADD COLUMN cache_saved_usd FLOAT"))


def _v6_channel_weight_limits(conn: Connection) -> None:
    """A channel's share of the requests for a model several channels serve, and what
    it may be sent (``{"rpm": n, "max_concurrent": n}``; NULL: no limit)."""
    conn.execute(text("ALTER TABLE channels ADD COLUMN weight FLOAT NOT NULL DEFAULT 1"))
    conn.execute(text("ALTER TABLE channels ADD COLUMN limits JSON"))


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "api keys and usage", _v1_keys_and_usage),
    (2, "stored responses", _v2_responses),
    (3, "usage names the upstream key", _v3_usage_upstream_key),
    (4, "channels managed live", _v4_channels),
    (5, "usage: 1-hour cache writes and cache savings", _v5_cache_kinds),
    (6, "channels: weight and limits", _v6_channel_weight_limits),
]
LATEST = MIGRATIONS[-1][0]


async def migrate(engine: AsyncEngine) -> int:
    """Bring the database to ``LATEST``; returns the version it is at. Raises
    ``SchemaError`` if the database was migrated by a newer tokenrelay."""
    versions = _version_table(MetaData())
    async with engine.connect() as raw:
        conn = await raw.execution_options(sqlite_begin="BEGIN IMMEDIATE")
        async with conn.begin():
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": LOCK_ID})
            await conn.run_sync(lambda sync: versions.create(sync, checkfirst=True))
            found = (await conn.execute(select(func.max(versions.c.version)))).scalar()
            current = int(found or 0)
            if current > LATEST:
                raise SchemaError(
                    f"the database is at schema version {current}, newer than this "
                    f"tokenrelay knows ({LATEST}); upgrade tokenrelay"
                )
            for version, name, step in MIGRATIONS:
                if version > current:
                    await conn.run_sync(step)
                    await conn.execute(
                        versions.insert().values(
                            version=version,
                            name=name,
                            applied_at=datetime.now(UTC).replace(tzinfo=None),
                        )
                    )
    return LATEST
