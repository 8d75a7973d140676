"""The usage rows a gateway process wrote, read back from its database."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import select

from tokenrelay.store import Store
from tokenrelay.store.schema import usage


def rows(database_url: str) -> list[dict[str, Any]]:
    """Every usage row in the database."""

    async def read() -> list[dict[str, Any]]:
        store = await Store.open(database_url)
        try:
            async with store.engine.connect() as conn:
                result = await conn.execute(select(usage))
                return [dict(r._mapping) for r in result]
        finally:
            await store.close()

    return asyncio.run(read())


def wait_for_rows(
    database_url: str, request_ids: set[str], timeout: float = 15
) -> dict[str, dict[str, Any]]:
    """The row of each request id, waiting for the batched writer to store them all."""
    deadline = time.monotonic() + timeout
    while True:
        found = {r["request_id"]: r for r in rows(database_url) if r["request_id"] in request_ids}
        if len(found) == len(request_ids):
            return found
        if time.monotonic() > deadline:
            missing = sorted(request_ids - set(found))
            raise AssertionError(f"no usage row for {missing} after {timeout} s")
        time.sleep(0.1)
