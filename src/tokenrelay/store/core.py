"""``Store``: keys and usage on one database, SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ..limits.fields import LIMIT_NAMES
from . import responses as responses_sql
from . import usage as usage_sql
from .db import create_engine
from .keys import (
    BLANK,
    SECRET_PREFIX,
    ApiKey,
    CreatedKey,
    KeySpec,
    check_prefix,
    display_prefix,
    hash_secret,
    new_key_id,
    new_secret,
    utcnow,
)
from .migrations import migrate
from .schema import api_keys, usage
from .sqlite_rows import SQLiteRows
from .usage import UsageRow


class KeyNotFound(LookupError):
    """No key has that id."""


class KeyRevoked(Exception):
    """The key is revoked; it cannot be rotated."""


class Store:
    """The database of keys and usage. Open with ``await Store.open(url)``, which runs
    the migrations; close with ``await store.close()``."""

    def __init__(self, engine: AsyncEngine, key_prefix: str = SECRET_PREFIX) -> None:
        self.engine = engine
        self.key_prefix = check_prefix(key_prefix)  # of the secrets made from now on
        self._sqlite_rows = SQLiteRows.for_engine(engine)  # usage batches to a SQLite file

    @classmethod
    async def open(
        cls, url: str | None = None, *, migrate_schema: bool = True, key_prefix: str = SECRET_PREFIX
    ) -> Store:
        """A store on ``url`` (``postgresql://…``, ``sqlite:///path``, a file path, or
        ``None`` for ``./tokenrelay.db``), migrated to the current schema."""
        check_prefix(key_prefix)
        engine = create_engine(url)
        if migrate_schema:
            try:
                await migrate(engine)
            except BaseException:
                await engine.dispose()
                raise
        return cls(engine, key_prefix)

    async def close(self) -> None:
        if self._sqlite_rows is not None:
            await self._sqlite_rows.close()
        await self.engine.dispose()

    # --- keys -------------------------------------------------------------------------

    async def create_key(self, spec: KeySpec) -> CreatedKey:
        """A new key; its secret is in the result and nowhere else."""
        secret = new_secret(self.key_prefix)
        key = ApiKey(
            id=new_key_id(),
            name=spec.name.strip(BLANK),
            prefix=display_prefix(secret),
            models=list(spec.models) if spec.models is not None else None,
            **{name: getattr(spec, name) for name in LIMIT_NAMES},
            budget_period=spec.budget_period,
            expires_at=spec.expires_at,
            created_at=utcnow().replace(microsecond=0),
            hash=hash_secret(secret),
        )
        values: dict[str, Any] = {name: getattr(key, name) for name in ApiKey.__dataclass_fields__}
        async with self.engine.begin() as conn:
            await conn.execute(api_keys.insert().values(**values))
        return CreatedKey(key, secret)

    async def list_keys(self, include_revoked: bool = False) -> list[ApiKey]:
        """Keys in creation order; revoked ones only when asked."""
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        async with self.engine.connect() as conn:
            return [ApiKey.from_row(r) for r in await conn.execute(query)]

    async def get_key(self, key_id: str) -> ApiKey | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        return ApiKey.from_row(row) if row is not None else None

    async def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke a key at once (idempotent: revoking again keeps the first time)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow().replace(microsecond=0))
            )
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        if row is None:
            raise KeyNotFound(key_id)
        return ApiKey.from_row(row)

    async def rotate_key(self, key_id: str) -> CreatedKey:
        """A new secret for the same key (same id, limits and usage history); the old
        secret stops working at once. Raises ``KeyNotFound`` or ``KeyRevoked``."""
        secret = new_secret(self.key_prefix)
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
            if row is None:
                raise KeyNotFound(key_id)
            if row._mapping["revoked_at"] is not None:
                raise KeyRevoked(key_id)
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id)
                .values(hash=hash_secret(secret), prefix=display_prefix(secret))
            )
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        return CreatedKey(ApiKey.from_row(row), secret)

    async def find_key(self, secret: str) -> ApiKey | None:
        """The key whose secret this is, whatever its status (check ``status()``), or
        ``None``. Looked up by hash, then the hash compared in constant time."""
        digest = hash_secret(secret)
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.hash == digest))).first()
        if row is None:
            return None
        key = ApiKey.from_row(row)
        return key if hmac.compare_digest(key.hash, digest) else None

    # --- usage ------------------------------------------------------------------------

    async def insert_usage(self, rows: Sequence[UsageRow]) -> None:
        """Insert rows in one transaction; request ids already stored are skipped."""
        if self._sqlite_rows is not None:
            await self._sqlite_rows.insert(rows)
            return
        async with self.engine.begin() as conn:
            await usage_sql.insert_rows(conn, rows)

    async def usage_report(
        self, by: str = "key", since: datetime | None = None
    ) -> list[dict[str, Any]]:
        """See ``usage.report``."""
        async with self.engine.connect() as conn:
            return await usage_sql.report(conn, by, since)

    async def spend_since(self, key_id: str, since: datetime | None) -> float:
        """USD recorded for a key since ``since``; a ``SpendLoader`` for the limiters."""
        async with self.engine.connect() as conn:
            return await usage_sql.spend_since(conn, key_id, since)

    async def count_usage(self) -> tuple[int, int]:
        """(rows, distinct request ids): a consistency probe for tests and health."""
        query = select(func.count(), func.count(usage.c.request_id.distinct()))
        async with self.engine.connect() as conn:
            rows, distinct = (await conn.execute(query)).one()
        return int(rows), int(distinct)

    # --- stored responses -----------------------------------------------------------

    async def put_response(
        self, id: str, owner: str, record: dict[str, Any], retention: float
    ) -> None:
        await responses_sql.put(self.engine, id, owner, record, retention)

    async def get_response(self, id: str, owner: str) -> dict[str, Any] | None:
        """The owner's unexpired response ``id``, or None (another owner's is None too)."""
        return await responses_sql.get(self.engine, id, owner)

    async def delete_response(self, id: str, owner: str) -> bool:
        return await responses_sql.remove(self.engine, id, owner)

    async def purge_responses(self) -> int:
        return await responses_sql.purge(self.engine)
