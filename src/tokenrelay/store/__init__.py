"""Storage: API keys (hashed) and usage records, on SQLite (default) or PostgreSQL.

- ``Store``: open/migrate the database; create, list, revoke, rotate and find keys;
  insert usage idempotently; usage reports and spend per key.
- ``UsageWriter``: batched, non-blocking, outage-proof usage recording.
- ``Authenticator``: a request's key (or the master key) from its headers.
"""

from __future__ import annotations

from .auth import Authenticator, Principal
from .core import KeyNotFound, KeyRevoked, Store
from .db import DEFAULT_URL, DRIVER_ERRORS, async_url, create_engine, redact
from .keys import ApiKey, CreatedKey, KeySpec, model_allowed
from .migrations import LATEST as SCHEMA_VERSION
from .migrations import SchemaError, migrate
from .usage import GROUPS, UsageRow
from .writer import UsageWriter, WriterOptions, WriterStats

__all__ = [
    "DEFAULT_URL",
    "DRIVER_ERRORS",
    "GROUPS",
    "SCHEMA_VERSION",
    "ApiKey",
    "Authenticator",
    "CreatedKey",
    "KeyNotFound",
    "KeyRevoked",
    "KeySpec",
    "Principal",
    "SchemaError",
    "Store",
    "UsageRow",
    "UsageWriter",
    "WriterOptions",
    "WriterStats",
    "async_url",
    "create_engine",
    "migrate",
    "model_allowed",
    "redact",
]
