"""Usage records: one row per request, written idempotently, read back as reports.

Cost is a ``Float`` (double precision) in USD: per-request costs are often far below a
cent, and a double keeps 15 significant digits, far more than a price table has.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import msgspec
from sqlalchemy import case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ..events import Usage
from .keys import utcnow
from .schema import api_keys, usage

GroupBy = Literal["key", "model", "day"]
GROUPS: tuple[str, ...] = ("key", "model", "day")


NOT_ERRORS = ("ok", "cancelled", "disconnected")  # outcomes that are not failures


class UsageRow(msgspec.Struct, kw_only=True):
    """One request's record. ``request_id`` is unique: recording the same request twice
    keeps the first row. ``cost_usd`` is ``None`` when the model has no price."""

    request_id: str
    model: str
    key_id: str | None = None
    provider: str | None = None
    deployment: str | None = None
    upstream_key_id: str | None = None  # which of the channel's upstream keys served it
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cost_usd: float | None = None
    cache_saved_usd: float | None = None
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    outcome: str = "ok"
    finish_reason: str | None = None
    attempts: int = 1
    resumes: int = 0
    estimated: bool = False
    created_at: datetime = msgspec.field(default_factory=utcnow)

    @classmethod
    def from_usage(
        cls, request_id: str, model: str, counts: Usage | None, **fields: Any
    ) -> UsageRow:
        """A row whose token counts come from a canonical ``Usage`` (``None``: no counts,
        e.g. a request that failed before the upstream answered)."""
        if counts is not None:
            fields.setdefault("input_tokens", counts.input)
            fields.setdefault("output_tokens", counts.output)
            fields.setdefault("cached_tokens", counts.cached)
            fields.setdefault("reasoning_tokens", counts.reasoning)
            fields.setdefault("cache_write_tokens", counts.cache_write)
            fields.setdefault("cache_write_1h_tokens", counts.cache_write_1h)
            fields.setdefault("estimated", counts.estimated)
        return cls(request_id=request_id, model=model, **fields)

    def values(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__struct_fields__}


async def insert_rows(conn: AsyncConnection, rows: Sequence[UsageRow]) -> None:
    """Insert ``rows``; a ``request_id`` already stored is skipped (``ON CONFLICT DO
    NOTHING`` on both dialects), so a retried batch never double-inserts."""
    unique = {row.request_id: row for row in reversed(rows)}  # first occurrence wins
    if not unique:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(usage).on_conflict_do_nothing(index_elements=["request_id"])
    await conn.execute(statement, [row.values() for row in reversed(unique.values())])


async def report(
    conn: AsyncConnection, by: str = "key", since: datetime | None = None
) -> list[dict[str, Any]]:
    """Totals grouped ``by`` key, model or UTC day, for requests at or after ``since``.
    Each row: ``group`` (key id, model or ``YYYY-MM-DD``; ``None`` for keyless
    requests), ``name`` (the key's name when by key), ``requests``, token sums,
    ``cost_usd`` and ``cache_saved_usd`` (rounded to 1e-9), ``cache_hit_rate`` (cached
    over input tokens), ``errors`` (outcomes other than ok, cancelled and disconnected: a stop by the user is not an error), ``estimated`` (rows with an
    estimated count), ``unpriced`` (rows without a cost)."""
    if by not in GROUPS:
        raise ValueError(f"by: must be one of {', '.join(GROUPS)}")
    if by == "key":
        group: Any = usage.c.key_id
    elif by == "model":
        group = usage.c.model
    else:
        group = func.date(usage.c.created_at)
    columns = [
        group.label("group"),
        func.count().label("requests"),
        func.coalesce(func.sum(usage.c.input_tokens), 0).label("input_tokens"),
        func.coalesce(func.sum(usage.c.output_tokens), 0).label("output_tokens"),
        func.coalesce(func.sum(usage.c.cached_tokens), 0).label("cached_tokens"),
        func.coalesce(func.sum(usage.c.reasoning_tokens), 0).label("reasoning_tokens"),
        func.coalesce(func.sum(usage.c.cache_write_tokens), 0).label("cache_write_tokens"),
        func.coalesce(func.sum(usage.c.cache_write_1h_tokens), 0).label("cache_write_1h_tokens"),
        func.coalesce(func.sum(usage.c.cost_usd), 0.0).label("cost_usd"),
        func.coalesce(func.sum(usage.c.cache_saved_usd), 0.0).label("cache_saved_usd"),
        func.sum(case((usage.c.outcome.not_in(NOT_ERRORS), 1), else_=0)).label("errors"),
        func.sum(case((usage.c.estimated, 1), else_=0)).label("estimated"),
        func.sum(case((usage.c.cost_usd.is_(None), 1), else_=0)).label("unpriced"),
    ]
    query = select(*columns).group_by(group).order_by(group.asc().nulls_last())
    if since is not None:
        query = query.where(usage.c.created_at >= since)
    rows = [dict(r._mapping) for r in (await conn.execute(query)).all()]
    names: dict[str, str] = {}
    if by == "key":
        found = await conn.execute(select(api_keys.c.id, api_keys.c.name))
        names = {r.id: r.name for r in found}
    for row in rows:
        if row["group"] is not None and by == "day":
            row["group"] = str(row["group"])
        for name in ("requests", "input_tokens", "output_tokens", "cached_tokens"):
            row[name] = int(row[name])
        for name in ("reasoning_tokens", "cache_write_tokens", "cache_write_1h_tokens"):
            row[name] = int(row[name] or 0)
        for name in ("errors", "estimated", "unpriced"):
            row[name] = int(row[name] or 0)
        row["cost_usd"] = round(float(row["cost_usd"]), 9)
        row["cache_saved_usd"] = round(float(row["cache_saved_usd"]), 9)
        # the share of the prompt tokens read from the provider's cache
        row["cache_hit_rate"] = (
            round(row["cached_tokens"] / row["input_tokens"], 4) if row["input_tokens"] else 0.0
        )
        if by == "key":
            row["name"] = names.get(row["group"]) if row["group"] else None
    return rows


async def spend_since(conn: AsyncConnection, key_id: str, since: datetime | None) -> float:
    """USD recorded for ``key_id`` at or after ``since`` (``None``: ever)."""
    query = select(func.coalesce(func.sum(usage.c.cost_usd), 0.0)).where(usage.c.key_id == key_id)
    if since is not None:
        query = query.where(usage.c.created_at >= since)
    return float((await conn.execute(query)).scalar() or 0.0)
