"""Budget thresholds: after a request's cost is added to its key's spend, report the
crossing of 80 % and of 100 % of the key's budget (``notify.Notifier.budget``).

A crossing is seen by the release that moved the spend over the line: ``spent`` after
the release, less this request's cost, was below it. With requests ending at the same
moment on several replicas, two may both see it (reported twice) — at least once,
never silently skipped by a single release.
"""

from __future__ import annotations

from ..limits import Limiter, Ticket
from ..notify import Notifier

THRESHOLDS = (80, 100)


async def release_and_watch(
    limiter: Limiter,
    ticket: Ticket,
    actual_tokens: int,
    cost_usd: float,
    budget_usd: float | None,
    notifier: Notifier | None,
) -> None:
    await limiter.release(ticket, actual_tokens, cost_usd)
    period = ticket.budget_period
    if notifier is None or budget_usd is None or period is None or cost_usd <= 0:
        return
    spent = await limiter.spent(ticket.key_id, period)
    before = spent - cost_usd
    for percent in THRESHOLDS:
        line = budget_usd * percent / 100
        if before < line <= spent:
            notifier.budget(ticket.key_id, percent, spent, budget_usd, period)
