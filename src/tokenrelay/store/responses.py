"""Stored responses: one JSON record per response id, per owner, until it expires.

The record is opaque here (the protocol that keeps state decides what is in it, see
``protocols/base.StateCodec``). Reads see only the owner's unexpired rows: another
key's id and an expired one are the same "not found". Expired rows are deleted in
the background by ``purge``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .keys import utcnow
from .schema import responses


async def put(
    engine: AsyncEngine, id: str, owner: str, record: dict[str, Any], retention: float
) -> None:
    """Keep ``record`` as response ``id`` of ``owner`` for ``retention`` seconds (a
    second put of the same id replaces it: a background response is kept while it runs,
    then again when it ends)."""
    now = utcnow()
    values = {
        "id": id,
        "owner": owner,
        "record": record,
        "created_at": now,
        "expires_at": now + timedelta(seconds=retention),
    }
    async with engine.begin() as conn:
        await conn.execute(delete(responses).where(responses.c.id == id))
        await conn.execute(responses.insert().values(**values))


async def get(engine: AsyncEngine, id: str, owner: str) -> dict[str, Any] | None:
    query = select(responses.c.record).where(
        responses.c.id == id, responses.c.owner == owner, responses.c.expires_at > utcnow()
    )
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    return dict(row[0]) if row is not None else None


async def remove(engine: AsyncEngine, id: str, owner: str) -> bool:
    """Delete the owner's response ``id``; False when there was none to delete."""
    async with engine.begin() as conn:
        done = await conn.execute(
            delete(responses).where(responses.c.id == id, responses.c.owner == owner)
        )
    return bool(done.rowcount)


async def purge(engine: AsyncEngine) -> int:
    """Delete every expired response; how many."""
    async with engine.begin() as conn:
        done = await conn.execute(delete(responses).where(responses.c.expires_at <= utcnow()))
    return int(done.rowcount or 0)
