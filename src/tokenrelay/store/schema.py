"""The tables as the code uses them today. ``migrations`` builds them step by step; a
test checks that a migrated database matches these definitions exactly.

Times are naive UTC ``DateTime`` columns (one convention for SQLite and PostgreSQL).
``usage.key_id`` has no foreign key: a usage record must be writable in any order and
survive anything that happens to its key, and open-mode requests have no key. The
limit columns of ``api_keys`` are ``limits.fields.LIMIT_FIELDS`` (the migrations that
built them stay as written).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

from ..limits.fields import LIMIT_FIELDS

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("applied_at", DateTime, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
    Column("prefix", String(32), nullable=False),
    Column("models", JSON, nullable=True),
    *(
        Column(f.name, (BigInteger if f.wide else Integer) if f.whole else Float, nullable=True)
        for f in LIMIT_FIELDS
    ),
    Column("budget_period", String(16), nullable=False),
    Column("expires_at", DateTime, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("revoked_at", DateTime, nullable=True),
)

usage = Table(
    "usage",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("key_id", String(32), nullable=True),
    Column("model", String(200), nullable=False),
    Column("provider", String(100), nullable=True),
    Column("deployment", String(200), nullable=True),
    Column("upstream_key_id", String(64), nullable=True),  # migration 3
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    Column("cache_write_tokens", BigInteger, nullable=False),
    Column("cost_usd", Float, nullable=True),
    # migration 5: the 1-hour part of cache_write_tokens, and what caching saved
    Column("cache_write_1h_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cache_saved_usd", Float, nullable=True),
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

responses = Table(
    "responses",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("record", JSON, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Index("ix_responses_expires", "expires_at"),
)
"""Stored answers of a stateful client protocol (the Responses API's ``store``): one
opaque JSON ``record`` per response id, visible to its ``owner`` only, until
``expires_at`` (the configured retention)."""

channels = Table(  # providers managed live (migration 4); the config file's are not here
    "channels",
    metadata,
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
    Column("weight", Float, nullable=False, server_default="1"),  # migration 6
    Column("limits", JSON, nullable=True),  # migration 6
)

channel_keys = Table(  # their upstream keys, encrypted (store/secrets.py)
    "channel_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("channel_id", String(32), nullable=False, index=True),
    Column("secret", String(4000), nullable=False),  # Fernet token, never the key itself
    Column("last4", String(8), nullable=False),
    Column("created_at", DateTime, nullable=False),
)
