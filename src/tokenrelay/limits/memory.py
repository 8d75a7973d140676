"""The in-process limiter: exact sliding-window logs kept in dictionaries.

Atomicity comes from asyncio: ``acquire`` checks every limit and admits the request in
one synchronous block with no ``await`` inside, so no other task can interleave. It holds
for one event loop in one process; replicas need ``RedisLimiter``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..ids import token_hex
from .base import (
    LEASE_SECONDS,
    WINDOW_SECONDS,
    Limits,
    SpendLoader,
    Ticket,
    budget_error,
    check_period,
    period_bounds,
    period_id,
    rate_error,
    too_large_error,
)


@dataclass(slots=True)
class _Entry:
    at: float
    tokens: int


@dataclass(slots=True)
class _KeyState:
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[str, _Entry]] = field(default_factory=deque)
    by_ticket: dict[str, _Entry] = field(default_factory=dict)
    token_sum: int = 0
    leases: dict[str, float] = field(default_factory=dict)

    def expire(self, now: float, window: float) -> None:
        horizon = now - window
        while self.requests and self.requests[0] <= horizon:
            self.requests.popleft()
        while self.tokens and self.tokens[0][1].at <= horizon:
            ticket, entry = self.tokens.popleft()
            self.token_sum -= entry.tokens
            if self.by_ticket.get(ticket) is entry:
                del self.by_ticket[ticket]
        for ticket in [t for t, until in self.leases.items() if until <= now]:
            del self.leases[ticket]


class MemoryLimiter:
    """Limits for one process. ``spend_loader`` seeds a budget period's spend from the
    usage table the first time the period is checked; without it spend starts at zero."""

    def __init__(
        self,
        spend_loader: SpendLoader | None = None,
        *,
        window: float = WINDOW_SECONDS,
        lease_seconds: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys: dict[str, _KeyState] = {}
        self._spend: dict[tuple[str, str], float] = {}
        self._loader = spend_loader
        self._seed_lock = asyncio.Lock()
        self.window = window
        self.lease_seconds = lease_seconds
        self.clock = clock

    async def acquire(self, key_id: str, limits: Limits, est_tokens: int) -> Ticket:
        if limits.budget_usd is not None:
            await self.check_budget(key_id, limits.budget_usd, limits.budget_period)
        est_tokens = max(0, int(est_tokens))
        now = self.clock()
        state = self._keys.get(key_id)
        if state is None:
            state = self._keys[key_id] = _KeyState()
        state.expire(now, self.window)
        # Every check first, then every admission: nothing is recorded for a rejection.
        if limits.max_concurrent and len(state.leases) >= limits.max_concurrent:
            raise rate_error("concurrency", limits.max_concurrent, 1.0)
        if limits.rpm and len(state.requests) >= limits.rpm:
            raise rate_error("rpm", limits.rpm, state.requests[0] + self.window - now)
        if limits.tpm:
            if est_tokens > limits.tpm:
                raise too_large_error(est_tokens, limits.tpm)
            if state.token_sum + est_tokens > limits.tpm:
                wait = self._token_wait(state, limits.tpm - est_tokens, now)
                raise rate_error("tpm", limits.tpm, wait, f" This request needs ~{est_tokens}.")
        ticket_id = token_hex(8)
        tracked = set()
        if limits.max_concurrent:
            state.leases[ticket_id] = now + self.lease_seconds
            tracked.add("concurrency")
        if limits.rpm:
            state.requests.append(now)
            tracked.add("rpm")
        if limits.tpm:
            entry = _Entry(now, est_tokens)
            state.tokens.append((ticket_id, entry))
            state.by_ticket[ticket_id] = entry
            state.token_sum += est_tokens
            tracked.add("tpm")
        period = limits.budget_period if limits.budget_usd is not None else None
        return Ticket(key_id, ticket_id, est_tokens, frozenset(tracked), period)

    def _token_wait(self, state: _KeyState, room: int, now: float) -> float:
        """Seconds until enough entries age out to bring the window's sum to ``room``."""
        remaining = state.token_sum
        for _, entry in state.tokens:
            remaining -= entry.tokens
            if remaining <= room:
                return entry.at + self.window - now
        return self.window

    async def release(self, ticket: Ticket, actual_tokens: int, cost_usd: float = 0.0) -> None:
        if ticket.released:
            return
        ticket.released = True
        state = self._keys.get(ticket.key_id)
        if state is not None:
            state.leases.pop(ticket.id, None)
            if "tpm" in ticket.tracked:
                now = self.clock()
                state.expire(now, self.window)
                actual = max(0, int(actual_tokens))
                entry = state.by_ticket.get(ticket.id)
                if entry is not None:
                    state.token_sum += actual - entry.tokens
                    entry.tokens = actual
                elif actual > ticket.est_tokens:
                    # The reservation aged out: what the estimate missed is used now.
                    extra = _Entry(now, actual - ticket.est_tokens)
                    state.tokens.append((ticket.id + ":late", extra))
                    state.token_sum += extra.tokens
        if ticket.budget_period is not None and cost_usd > 0:
            self._add_spend(ticket.key_id, ticket.budget_period, cost_usd)

    def _add_spend(self, key_id: str, period: str, cost: float) -> None:
        slot = (key_id, period_id(period))
        if slot in self._spend:
            self._spend[slot] += cost
        elif self._loader is None:
            self._spend[slot] = cost
        # else: not seeded yet; the seed reads the usage table, which will hold this cost.

    async def spent(self, key_id: str, period: str) -> float:
        slot = (key_id, period_id(check_period(period)))
        if slot not in self._spend:
            if self._loader is None:
                return 0.0
            async with self._seed_lock:
                if slot not in self._spend:
                    since, _ = period_bounds(period)
                    self._spend[slot] = float(await self._loader(key_id, since))
        return self._spend[slot]

    async def check_budget(self, key_id: str, budget_usd: float | None, period: str) -> None:
        if budget_usd is None:
            return
        spent = await self.spent(key_id, period)
        if spent >= budget_usd:
            raise budget_error(spent, budget_usd, period)

    async def aclose(self) -> None:
        self._keys.clear()
