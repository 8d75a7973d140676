"""Per-key rate limits (rpm, tpm, concurrency) and spend budgets.

Two backends behind one ``Limiter`` interface: ``MemoryLimiter`` for one process (the
default) and ``RedisLimiter`` for replicas sharing a Redis. ``base`` documents the
algorithm and its exact bounds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import (
    BUDGET_PERIODS,
    LEASE_SECONDS,
    WINDOW_SECONDS,
    Limiter,
    Limits,
    SpendLoader,
    Ticket,
    period_bounds,
    period_id,
)
from .memory import MemoryLimiter

if TYPE_CHECKING:
    from .redis_backend import RedisLimiter


def __getattr__(name: str) -> Any:
    # RedisLimiter imports redis-py: loaded only when asked for (memory and start time)
    if name == "RedisLimiter":
        from .redis_backend import RedisLimiter

        return RedisLimiter
    raise AttributeError(name)


__all__ = [
    "BUDGET_PERIODS",
    "LEASE_SECONDS",
    "WINDOW_SECONDS",
    "Limiter",
    "Limits",
    "MemoryLimiter",
    "RedisLimiter",
    "SpendLoader",
    "Ticket",
    "create_limiter",
    "period_bounds",
    "period_id",
]


def create_limiter(
    redis_url: str | None = None,
    spend_loader: SpendLoader | None = None,
    *,
    fail_open: bool = False,
) -> Limiter:
    """``RedisLimiter`` when ``redis_url`` is given, else ``MemoryLimiter``.
    ``spend_loader`` (e.g. ``store.spend_since``) seeds budget spend from the usage table."""
    if redis_url:
        from .redis_backend import RedisLimiter

        return RedisLimiter.from_url(redis_url, spend_loader, fail_open=fail_open)
    return MemoryLimiter(spend_loader)
