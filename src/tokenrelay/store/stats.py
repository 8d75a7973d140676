"""Usage aggregated for the ``/admin`` dashboard, in SQL on SQLite and PostgreSQL:
time series per model (requests, tokens, cost, errors, TTFT p50/p95) and spend per key.
The HTTP side is ``server/admin_stats.py``; see its docstring for the method."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec
from sqlalchemy import BigInteger, Integer, case, cast, extract, func, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from ..limits import period_bounds
from .keys import ApiKey, utcnow
from .schema import api_keys, usage

Bucket = Literal["hour", "day"]
BUCKET_SIZES: dict[str, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
DEFAULT_SPANS: dict[str, timedelta] = {"hour": timedelta(hours=24), "day": timedelta(days=30)}
AUTO_DAY_AFTER = timedelta(days=3)  # a longer span without ``bucket`` is shown by day
MAX_BUCKETS = 2400  # 100 days by hour; an earlier ``since`` is moved forward
MAX_KEY_ID = 32  # the column's width
CLIENT_ENDED = ("cancelled", "disconnected")
"""Outcomes the client chose (stopped, or went away): counted, but not errors."""

_EPOCH = datetime(1970, 1, 1)


# --- wire types ---------------------------------------------------------------------------


class StatsTotals(msgspec.Struct, kw_only=True):
    """Totals over a period. ``error_rate`` is ``errors / requests`` (``None`` without
    requests); TTFTs are in milliseconds over the requests that had a first token."""

    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cached_tokens: int = 0  # prompt tokens read from the provider's cache
    cache_hit_rate: float | None = None  # cached_tokens / input_tokens
    cache_saved_usd: float = 0.0  # what caching saved (store/usage.py)
    errors: int
    client_ended: int
    error_rate: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None


class StatsSeries(msgspec.Struct, kw_only=True):
    """One value per bucket of ``StatsReport.buckets``; ``None`` where the value is
    undefined (no requests, or no request with a first token)."""

    requests: list[int]
    input_tokens: list[int]
    output_tokens: list[int]
    cost_usd: list[float]
    errors: list[int]
    error_rate: list[float | None]
    ttft_p50_ms: list[float | None]
    ttft_p95_ms: list[float | None]


class ModelStats(msgspec.Struct, kw_only=True):
    model: str
    totals: StatsTotals
    series: StatsSeries


class StatsReport(msgspec.Struct, kw_only=True):
    """``buckets``: the start of every bucket from the one holding ``since`` up to
    ``until`` (exclusive), empty ones included; the first bucket counts only from
    ``since``. ``models``: busiest first."""

    since: datetime
    until: datetime
    bucket: Bucket
    key_id: str | None
    buckets: list[datetime]
    totals: StatsTotals
    models: list[ModelStats]


class KeySpend(msgspec.Struct, kw_only=True):
    """``spend_usd``: recorded in the key's current budget period (from
    ``period_start``; all time when ``budget_period`` is total)."""

    key_id: str
    name: str
    status: str
    budget_usd: float | None
    budget_period: str
    period_start: datetime | None
    period_end: datetime | None
    spend_usd: float
    total_spend_usd: float
    requests: int
    last_used_at: datetime | None


class SpendReport(msgspec.Struct, kw_only=True):
    data: list[KeySpend]


# --- queries ----------------------------------------------------------------------------


def _epoch_seconds(dialect: str) -> ColumnElement[int]:
    """Whole seconds since 1970 of ``usage.created_at`` (naive UTC) in SQL."""
    if dialect == "postgresql":
        return cast(func.floor(extract("epoch", usage.c.created_at)), BigInteger)
    # SQLite keeps 'YYYY-MM-DD HH:MM:SS.ffffff' and rounds fractions to milliseconds
    # when it parses one (08:59:59.9999 would be 09:00): drop the fraction first.
    return cast(func.strftime("%s", func.substr(usage.c.created_at, 1, 19)), Integer)


def floor_time(moment: datetime, bucket: str) -> datetime:
    moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if bucket == "day" else moment


def _rate(errors: int, requests: int) -> float | None:
    return errors / requests if requests else None


def _ms(value: Any) -> float | None:
    return None if value is None else float(value)


def _percentiles(filters: Sequence[ColumnElement[bool]], groups: Sequence[Any]) -> Any:
    """``groups`` columns, then p50 and p95 of ``ttft_ms`` (nearest rank) per group."""
    labelled = [g.label(f"g{i}") for i, g in enumerate(groups)]
    ranked = (
        select(
            *labelled,
            usage.c.ttft_ms.label("v"),
            func.row_number()
            .over(partition_by=list(groups) or None, order_by=usage.c.ttft_ms)
            .label("rn"),
            func.count().over(partition_by=list(groups) or None).label("n"),
        )
        .where(*filters, usage.c.ttft_ms.is_not(None))
        .subquery()
    )
    keys = [ranked.c[f"g{i}"] for i in range(len(groups))]
    p50 = func.max(case((ranked.c.rn == (ranked.c.n + 1) // 2, ranked.c.v)))
    p95 = func.max(case((ranked.c.rn == (ranked.c.n * 95 + 99) // 100, ranked.c.v)))
    query = select(*keys, p50.label("p50"), p95.label("p95"))
    return query.group_by(*keys) if keys else query


async def stats_report(
    conn: AsyncConnection,
    since: datetime,
    until: datetime,
    bucket: Bucket,
    key_id: str | None = None,
) -> StatsReport:
    """The report for requests recorded in ``[since, until)`` (naive UTC), optionally
    of one key. Callers keep the span within ``MAX_BUCKETS`` buckets."""
    size = BUCKET_SIZES[bucket]
    start = floor_time(since, bucket)
    count = max(0, math.ceil((until - start) / size)) if until > since else 0
    buckets = [start + i * size for i in range(count)]
    step = int(size.total_seconds())
    first = int((start - _EPOCH).total_seconds())
    filters: list[ColumnElement[bool]] = [
        usage.c.created_at >= since,
        usage.c.created_at < until,
    ]
    if key_id is not None:
        filters.append(usage.c.key_id == key_id)
    index = ((_epoch_seconds(conn.dialect.name) - first) // step).label("idx")
    failed = usage.c.outcome.not_in(("ok", *CLIENT_ENDED))
    sums = (
        select(
            usage.c.model,
            index,
            func.count().label("requests"),
            func.coalesce(func.sum(usage.c.input_tokens), 0).label("input_tokens"),
            func.coalesce(func.sum(usage.c.output_tokens), 0).label("output_tokens"),
            func.coalesce(func.sum(usage.c.cost_usd), 0.0).label("cost_usd"),
            func.coalesce(func.sum(usage.c.cached_tokens), 0).label("cached_tokens"),
            func.coalesce(func.sum(usage.c.cache_saved_usd), 0.0).label("cache_saved_usd"),
            func.coalesce(func.sum(case((failed, 1), else_=0)), 0).label("errors"),
            func.coalesce(func.sum(case((usage.c.outcome.in_(CLIENT_ENDED), 1), else_=0)), 0).label(
                "client_ended"
            ),
        )
        .where(*filters)
        .group_by(usage.c.model, index)
    )
    per_model: dict[str, dict[str, Any]] = {}

    def entry(model: str) -> dict[str, Any]:
        if model not in per_model:
            per_model[model] = {
                "requests": [0] * count,
                "input_tokens": [0] * count,
                "output_tokens": [0] * count,
                "cost_usd": [0.0] * count,
                "cached_tokens": [0] * count,
                "cache_saved_usd": [0.0] * count,
                "errors": [0] * count,
                "client_ended": [0] * count,
                "ttft_p50_ms": [None] * count,
                "ttft_p95_ms": [None] * count,
            }
        return per_model[model]

    if count:
        for row in await conn.execute(sums):
            i = int(row.idx)
            if not 0 <= i < count:  # cannot happen with the filters; never index out
                continue
            series = entry(row.model)
            for name in ("requests", "input_tokens", "output_tokens", "errors", "client_ended"):
                series[name][i] = int(getattr(row, name))
            series["cached_tokens"][i] = int(row.cached_tokens)
            series["cost_usd"][i] = round(float(row.cost_usd), 9)
            series["cache_saved_usd"][i] = float(row.cache_saved_usd)
        bucket_ttft = _percentiles(filters, [usage.c.model, index.element])
        for row in await conn.execute(bucket_ttft):
            i = int(row.g1)
            if row.g0 in per_model and 0 <= i < count:
                per_model[row.g0]["ttft_p50_ms"][i] = _ms(row.p50)
                per_model[row.g0]["ttft_p95_ms"][i] = _ms(row.p95)
    model_ttft: dict[str, tuple[float | None, float | None]] = {}
    everything: tuple[float | None, float | None] = (None, None)
    if per_model:
        for row in await conn.execute(_percentiles(filters, [usage.c.model])):
            model_ttft[row.g0] = (_ms(row.p50), _ms(row.p95))
        overall = (await conn.execute(_percentiles(filters, []))).one()
        everything = (_ms(overall.p50), _ms(overall.p95))

    def totals(
        series: list[dict[str, Any]], ttft: tuple[float | None, float | None]
    ) -> StatsTotals:
        def total(name: str) -> int:
            return sum(sum(s[name]) for s in series)

        requests, errors = total("requests"), total("errors")
        return StatsTotals(
            requests=requests,
            input_tokens=total("input_tokens"),
            output_tokens=total("output_tokens"),
            cost_usd=round(sum(sum(s["cost_usd"]) for s in series), 9),
            cached_tokens=total("cached_tokens"),
            cache_hit_rate=_rate(total("cached_tokens"), total("input_tokens")),
            cache_saved_usd=round(sum(sum(s["cache_saved_usd"]) for s in series), 9),
            errors=errors,
            client_ended=total("client_ended"),
            error_rate=_rate(errors, requests),
            ttft_p50_ms=ttft[0],
            ttft_p95_ms=ttft[1],
        )

    models = []
    for model, s in per_model.items():
        models.append(
            ModelStats(
                model=model,
                totals=totals([s], model_ttft.get(model, (None, None))),
                series=StatsSeries(
                    requests=s["requests"],
                    input_tokens=s["input_tokens"],
                    output_tokens=s["output_tokens"],
                    cost_usd=s["cost_usd"],
                    errors=s["errors"],
                    error_rate=[
                        _rate(e, r) for e, r in zip(s["errors"], s["requests"], strict=True)
                    ],
                    ttft_p50_ms=s["ttft_p50_ms"],
                    ttft_p95_ms=s["ttft_p95_ms"],
                ),
            )
        )
    models.sort(key=lambda m: (-m.totals.requests, m.model))
    return StatsReport(
        since=since.replace(tzinfo=UTC),
        until=until.replace(tzinfo=UTC),
        bucket=bucket,
        key_id=key_id,
        buckets=[b.replace(tzinfo=UTC) for b in buckets],
        totals=totals(list(per_model.values()), everything),
        models=models,
    )


async def spend_report(conn: AsyncConnection, now: datetime | None = None) -> SpendReport:
    """Every key (revoked ones too, in creation order) with its spend in the budget
    period containing ``now`` (naive UTC; default: now), in total, its request count
    and its last request's time."""
    now = now or utcnow()
    day, day_end = period_bounds("daily", now)
    month, month_end = period_bounds("monthly", now)
    cost = func.coalesce(usage.c.cost_usd, 0.0)
    sums = (
        select(
            usage.c.key_id,
            func.count().label("requests"),
            func.coalesce(func.sum(cost), 0.0).label("total"),
            func.coalesce(func.sum(case((usage.c.created_at >= day, cost), else_=0.0)), 0.0).label(
                "daily"
            ),
            func.coalesce(
                func.sum(case((usage.c.created_at >= month, cost), else_=0.0)), 0.0
            ).label("monthly"),
            func.max(usage.c.created_at).label("last_used_at"),
        )
        .where(usage.c.key_id.is_not(None))
        .group_by(usage.c.key_id)
    )
    spent = {row.key_id: row for row in await conn.execute(sums)}
    keys = await conn.execute(select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id))
    bounds = {"daily": (day, day_end), "monthly": (month, month_end), "total": (None, None)}
    data = []
    for key in (ApiKey.from_row(row) for row in keys):
        row = spent.get(key.id)
        period = key.budget_period if key.budget_period in bounds else "total"
        start, end = bounds[period]
        by_period = {"daily": row.daily, "monthly": row.monthly, "total": row.total} if row else {}
        last = row.last_used_at if row is not None else None
        data.append(
            KeySpend(
                key_id=key.id,
                name=key.name,
                status=key.status(now),
                budget_usd=key.budget_usd,
                budget_period=key.budget_period,
                period_start=start.replace(tzinfo=UTC) if start else None,
                period_end=end.replace(tzinfo=UTC) if end else None,
                spend_usd=round(float(by_period.get(period, 0.0)), 9),
                total_spend_usd=round(float(row.total), 9) if row is not None else 0.0,
                requests=int(row.requests) if row is not None else 0,
                last_used_at=last.replace(tzinfo=UTC) if last is not None else None,
            )
        )
    return SpendReport(data=data)


# --- HTTP -------------------------------------------------------------------------------
