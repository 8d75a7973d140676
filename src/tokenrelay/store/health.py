"""Measured uptime and latency, from the usage table (real traffic and probes), in SQL
on SQLite and PostgreSQL: the database is the truth every replica shares.

Per model (the name asked) and per deployment (the one that gave the request's final
answer), over the last 1 h, 24 h, 7 d and 30 d:

- availability: ``1 - failures / requests`` as a percentage. Counted: rows that reached
  a deployment (``deployment`` set; a request refused by the gateway itself is not
  the upstream's doing). A failure is an outcome other than ``ok``, a stop by the
  client (``cancelled``, ``disconnected``) or a request the upstream judged wrong
  (``CLIENT_FAULTS``); an attempt that failed and was retried elsewhere shows in the
  health rule, not here (its request's row names the deployment that answered).
- time to first token p50/p95 (nearest rank) and output tokens per second
  (``output_tokens / (duration - ttft)`` summed over successful rows with more than one
  output token), over 24 h; the error mix (failures by outcome) over 24 h;
- ``bars``: availability per UTC day for the last 30 days (``None``: no traffic).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from .schema import usage
from .stats import _EPOCH, _epoch_seconds, _percentiles

WINDOWS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
BAR_DAYS = 30
NOT_FAILURES = ("ok", "cancelled", "disconnected")
CLIENT_FAULTS = ("invalid_request", "not_found", "request_too_large", "gone")


class Figures(msgspec.Struct, kw_only=True):
    """``uptime``: percent per window (``None`` without requests); ``requests`` and
    ``failures`` per window; latency over 24 h."""

    requests: dict[str, int]
    failures: dict[str, int]
    uptime: dict[str, float | None]
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    tokens_per_second: float | None = None
    errors: dict[str, int] = {}
    bars: list[float | None] = []


class HealthReport(msgspec.Struct, kw_only=True):
    generated_at: datetime
    bar_days: list[str]  # the UTC day of each bar, oldest first
    models: dict[str, Figures]
    deployments: dict[str, Figures]


def _failed() -> ColumnElement[bool]:
    return usage.c.outcome.not_in((*NOT_FAILURES, *CLIENT_FAULTS))


def uptime(requests: int, failures: int) -> float | None:
    return round(100.0 * (requests - failures) / requests, 3) if requests else None


async def _figures(conn: AsyncConnection, column: Any, now: datetime) -> dict[str, Figures]:
    failed = _failed()
    counted = usage.c.deployment.is_not(None)
    sums: list[Any] = [column.label("g")]
    for name, span in WINDOWS.items():
        inside = usage.c.created_at >= now - span
        sums.append(func.sum(case((inside, 1), else_=0)).label(f"r{name}"))
        sums.append(func.sum(case((and_(inside, failed), 1), else_=0)).label(f"f{name}"))
    query = select(*sums).where(counted, usage.c.created_at >= now - WINDOWS["30d"])
    out: dict[str, Figures] = {}
    for row in (await conn.execute(query.group_by(column))).all():
        m = row._mapping
        requests = {w: int(m[f"r{w}"] or 0) for w in WINDOWS}
        failures = {w: int(m[f"f{w}"] or 0) for w in WINDOWS}
        out[m["g"]] = Figures(
            requests=requests,
            failures=failures,
            uptime={w: uptime(requests[w], failures[w]) for w in WINDOWS},
            bars=[None] * BAR_DAYS,
        )
    day_ago = now - WINDOWS["24h"]
    recent = [counted, usage.c.created_at >= day_ago]
    for g, p50, p95 in (await conn.execute(_percentiles(recent, [column]))).all():
        if g in out:
            out[g].ttft_p50_ms = None if p50 is None else round(float(p50), 1)
            out[g].ttft_p95_ms = None if p95 is None else round(float(p95), 1)
    generating = (usage.c.duration_ms - usage.c.ttft_ms) / 1000.0
    speed = (
        select(
            column.label("g"),
            func.sum(usage.c.output_tokens).label("tokens"),
            func.sum(generating).label("seconds"),
        )
        .where(
            *recent,
            usage.c.outcome == "ok",
            usage.c.output_tokens > 1,
            usage.c.ttft_ms.is_not(None),
            usage.c.duration_ms > usage.c.ttft_ms,
        )
        .group_by(column)
    )
    for g, tokens, seconds in (await conn.execute(speed)).all():
        if g in out and seconds:
            out[g].tokens_per_second = round(float(tokens) / float(seconds), 1)
    mix = (
        select(column.label("g"), usage.c.outcome, func.count().label("n"))
        .where(*recent, failed)
        .group_by(column, usage.c.outcome)
    )
    for g, outcome, n in (await conn.execute(mix)).all():
        if g in out:
            out[g].errors[outcome] = int(n)
    # Daily bars: availability per UTC day, the last BAR_DAYS days (today included).
    first_day = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=BAR_DAYS - 1
    )
    first = int((first_day - _EPOCH).total_seconds())
    index = ((_epoch_seconds(conn.dialect.name) - first) // 86400).label("idx")
    daily = (
        select(
            column.label("g"),
            index,
            func.count().label("n"),
            func.sum(case((failed, 1), else_=0)).label("f"),
        )
        .where(counted, usage.c.created_at >= first_day)
        .group_by(column, index)
    )
    for g, idx, n, f in (await conn.execute(daily)).all():
        if g in out and 0 <= int(idx) < BAR_DAYS:
            out[g].bars[int(idx)] = uptime(int(n), int(f or 0))
    return out


async def health_report(conn: AsyncConnection, now: datetime) -> HealthReport:
    """The figures as of ``now`` (naive UTC)."""
    first_day = now.date() - timedelta(days=BAR_DAYS - 1)
    return HealthReport(
        generated_at=now,
        bar_days=[str(first_day + timedelta(days=i)) for i in range(BAR_DAYS)],
        models=await _figures(conn, usage.c.model, now),
        deployments=await _figures(conn, usage.c.deployment, now),
    )
