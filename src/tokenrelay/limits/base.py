"""What every limiter shares: the per-key limits, the ticket of an admitted request, the
budget periods, and the errors a rejected request gets.

Algorithm (both backends): a sliding-window log over the last ``window`` seconds (60).

- rpm: each admitted request is one entry stamped with its admission time. A request is
  admitted only if fewer than ``rpm`` entries lie in ``(now - window, now]``. No overshoot:
  no window of that length ever holds more than ``rpm`` admissions.
- tpm: each admitted request is an entry weighing its estimated tokens; a request is
  admitted only if the weights in the window plus its estimate stay ``<= tpm``. So no
  window ever holds more than ``tpm`` *reserved* tokens. When the request ends,
  ``release`` replaces the estimate by the real count. The only excess possible is the
  estimation error (real - estimate) of requests already admitted: it is charged at once
  (to the entry while it is in the window, or as a new entry at the time of release when
  the original has aged out) and holds back new requests until it ages out.
  A request whose estimate alone exceeds ``tpm`` is rejected outright.
- concurrency: a lease per admitted request, freed by ``release``; never more than
  ``max_concurrent`` leases. A lease expires after ``lease_seconds`` (one hour by
  default) so a crashed process cannot hold a slot forever; a stream longer than that
  stops counting after its lease ends.
- budget: spend per key per period (UTC day, UTC calendar month, or all time), seeded
  from the usage table on first use and increased by each release's cost. A request is
  refused while spend >= budget; requests already running when the budget is crossed
  finish, so spend can exceed the budget by what was in flight at that moment.

All checks of one ``acquire`` and its admission are one atomic step (one Lua script in
Redis, one synchronous block in memory): concurrent acquires can never together pass a
limit that each alone would hit.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from ..events import GatewayError

BudgetPeriod = Literal["daily", "monthly", "total"]
BUDGET_PERIODS: tuple[str, ...] = ("daily", "monthly", "total")

WINDOW_SECONDS = 60.0
LEASE_SECONDS = 3600.0

SpendLoader = Callable[[str, datetime | None], Awaitable[float]]
"""``(key_id, since)`` -> USD spent by the key since ``since`` (``None``: ever)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """A key's limits; ``None`` means unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    budget_usd: float | None = None
    budget_period: str = "monthly"

    @property
    def any_rate(self) -> bool:
        return bool(self.rpm or self.tpm or self.max_concurrent)


@dataclass(slots=True)
class Ticket:
    """An admitted request, handed back to ``release``. ``tracked`` names the limits that
    recorded it (rpm, tpm, concurrency), so release undoes exactly what acquire did;
    ``released`` makes a second release a no-op."""

    key_id: str
    id: str
    est_tokens: int
    tracked: frozenset[str]
    budget_period: str | None = None
    released: bool = False


class Limiter(Protocol):
    """Per-key rate limits, concurrency and budgets. Implementations: ``MemoryLimiter``
    (one process) and ``RedisLimiter`` (shared by every replica)."""

    async def acquire(self, key_id: str, limits: Limits, est_tokens: int) -> Ticket:
        """Admit one request or raise ``GatewayError`` (429, ``Retry-After``, the message
        naming the limit: rpm, tpm, concurrency, or the budget)."""
        ...

    async def release(self, ticket: Ticket, actual_tokens: int, cost_usd: float = 0.0) -> None:
        """End the request: free its concurrency slot, replace the estimated tokens by
        ``actual_tokens`` and add ``cost_usd`` to the budget period's spend. A second
        release of the same ticket does nothing."""
        ...

    async def check_budget(self, key_id: str, budget_usd: float | None, period: str) -> None:
        """Raise ``GatewayError`` (429, code ``insufficient_quota``) when the key's spend in
        the current ``period`` has reached ``budget_usd``."""
        ...

    async def spent(self, key_id: str, period: str) -> float:
        """USD spent by the key in the current ``period`` (as the limiter counts it)."""
        ...

    async def aclose(self) -> None:
        """Release connections; the limiter is unusable afterwards."""
        ...


# --- budget periods -------------------------------------------------------------------


def check_period(period: str) -> str:
    if period not in BUDGET_PERIODS:
        raise ValueError(f"budget period must be one of {', '.join(BUDGET_PERIODS)}")
    return period


def period_bounds(
    period: str, now: datetime | None = None
) -> tuple[datetime | None, datetime | None]:
    """The UTC start and end of the budget period containing ``now`` (naive UTC
    datetimes, as the store keeps them); ``(None, None)`` for ``total``."""
    check_period(period)
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    if period == "daily":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    if period == "monthly":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        return start, start.replace(year=year, month=month)
    return None, None


def period_id(period: str, now: datetime | None = None) -> str:
    """A stable name for the current period: ``2026-11-21``, ``2026-11`` or ``total``."""
    start, _ = period_bounds(period, now)
    if start is None:
        return "total"
    return start.strftime("%Y-%m-%d" if period == "daily" else "%Y-%m")


# --- errors ---------------------------------------------------------------------------


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def rate_error(limit: str, value: int, wait: float, extra: str = "") -> GatewayError:
    """The 429 for one named limit (``rpm``, ``tpm`` or ``concurrency``)."""
    what = {
        "rpm": f"{value} requests per minute (rpm)",
        "tpm": f"{value} tokens per minute (tpm)",
        "concurrency": f"{value} concurrent requests (max_concurrent)",
    }[limit]
    return GatewayError(
        "rate_limit",
        f"Rate limit reached for this key: {what}.{extra} Retry after {max(1, math.ceil(wait))} s.",
        status=429,
        code="rate_limit_exceeded",
        headers={**retry_after(wait), "x-ratelimit-limit-name": limit},
    )


def too_large_error(est_tokens: int, tpm: int) -> GatewayError:
    return GatewayError(
        "rate_limit",
        f"This request needs an estimated {est_tokens} tokens, more than this key's whole "
        f"limit of {tpm} tokens per minute (tpm); it can never be admitted.",
        status=429,
        code="rate_limit_exceeded",
        headers={"x-ratelimit-limit-name": "tpm"},
    )


def budget_error(spent: float, budget: float, period: str) -> GatewayError:
    """OpenAI's shape for an exhausted quota: 429 with code ``insufficient_quota``."""
    _, end = period_bounds(period)
    headers = {"x-ratelimit-limit-name": "budget"}
    when = ""
    if end is not None:
        wait = (end - datetime.now(UTC).replace(tzinfo=None)).total_seconds()
        headers.update(retry_after(wait))
        when = f" The budget renews at {end.isoformat()}Z."
    span = {"daily": "today", "monthly": "this month", "total": "in total"}[period]
    return GatewayError(
        "rate_limit",
        f"This key has used its budget: ${spent:.4f} spent of ${budget:.2f} {span}.{when}",
        status=429,
        code="insufficient_quota",
        headers=headers,
    )
