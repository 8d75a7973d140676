"""The Redis limiter: the same sliding-window logs as ``MemoryLimiter``, kept in Redis so
every replica enforces one limit together.

Each ``acquire`` and each ``release`` is one Lua script: Redis runs a script alone, so
the expiry, the checks and the admission can never interleave with another replica's
(no read-modify-write races). Time comes from the Redis server (``TIME``), one clock for
all replicas. A key's data sit under one hash tag, ``tr:{<key id>}:…``, so they share a
Redis Cluster slot. Layout: ``req`` (ZSET ticket -> admission ms: rpm), ``tok`` (ZSET
ticket -> ms) with ``tokw`` (HASH ticket -> tokens, plus ``_sum``: tpm), ``lease``
(ZSET ticket -> lease end ms: concurrency), ``spend:<period>`` (float: budget). Every
key expires once idle for a window, so nothing accumulates.

When Redis cannot be reached, ``acquire`` fails closed with a 503 unless the limiter was
built with ``fail_open=True`` (then it admits and logs); ``release`` only logs.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..events import GatewayError
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

log = logging.getLogger("tokenrelay.limits")

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: req, tok, tokw, lease. ARGV: rpm, tpm, conc, est, ticket, window_ms, lease_ms.
_ACQUIRE = (
    _NOW
    + """
local rpm, tpm, conc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local est, ticket = tonumber(ARGV[4]), ARGV[5]
local window, lease = tonumber(ARGV[6]), tonumber(ARGV[7])
local horizon = now - window
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', horizon)
while true do
  local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', horizon, 'LIMIT', 0, 500)
  if #old == 0 then break end
  local freed = 0
  for _, w in ipairs(redis.call('HMGET', KEYS[3], unpack(old))) do
    freed = freed + (tonumber(w) or 0)
  end
  redis.call('ZREM', KEYS[2], unpack(old))
  redis.call('HDEL', KEYS[3], unpack(old))
  redis.call('HINCRBY', KEYS[3], '_sum', -freed)
end
if conc > 0 and redis.call('ZCARD', KEYS[4]) >= conc then
  return {'concurrency', 1000}
end
if rpm > 0 and redis.call('ZCARD', KEYS[1]) >= rpm then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {'rpm', tonumber(first[2]) + window - now}
end
if tpm > 0 then
  if est > tpm then return {'too_large', 0} end
  local sum = tonumber(redis.call('HGET', KEYS[3], '_sum') or '0')
  if sum + est > tpm then
    local remaining, wait = sum, window
    local entries = redis.call('ZRANGE', KEYS[2], 0, 999, 'WITHSCORES')
    for i = 1, #entries, 2 do
      remaining = remaining - (tonumber(redis.call('HGET', KEYS[3], entries[i])) or 0)
      if remaining <= tpm - est then
        wait = tonumber(entries[i + 1]) + window - now
        break
      end
    end
    return {'tpm', wait}
  end
end
if conc > 0 then
  redis.call('ZADD', KEYS[4], now + lease, ticket)
  redis.call('PEXPIRE', KEYS[4], lease)
end
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, ticket)
  redis.call('PEXPIRE', KEYS[1], window)
end
if tpm > 0 then
  redis.call('ZADD', KEYS[2], now, ticket)
  redis.call('HSET', KEYS[3], ticket, est)
  redis.call('HINCRBY', KEYS[3], '_sum', est)
  redis.call('PEXPIRE', KEYS[2], window)
  redis.call('PEXPIRE', KEYS[3], window)
end
return {'ok', 0}
"""
)

# KEYS: tok, tokw, lease. ARGV: ticket, actual, est, window_ms, reconcile (0/1).
_RELEASE = (
    _NOW
    + """
local ticket, actual, est = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local window = tonumber(ARGV[4])
redis.call('ZREM', KEYS[3], ticket)
if ARGV[5] ~= '1' then return 0 end
local at = redis.call('ZSCORE', KEYS[1], ticket)
if at and tonumber(at) > now - window then
  local old = tonumber(redis.call('HGET', KEYS[2], ticket) or '0')
  redis.call('HSET', KEYS[2], ticket, actual)
  redis.call('HINCRBY', KEYS[2], '_sum', actual - old)
elseif actual > est then
  local late = ticket .. ':late'
  redis.call('ZADD', KEYS[1], now, late)
  redis.call('HSET', KEYS[2], late, actual - est)
  redis.call('HINCRBY', KEYS[2], '_sum', actual - est)
  redis.call('PEXPIRE', KEYS[1], window)
  redis.call('PEXPIRE', KEYS[2], window)
end
return 1
"""
)

# KEYS: spend. ARGV: amount, ttl seconds (0: none), create if missing (0/1).
_ADD_SPEND = """
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[1]) == 0 then return nil end
local v = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return v
"""


class RedisLimiter:
    """Limits shared by every process that uses the same Redis database."""

    def __init__(
        self,
        client: aioredis.Redis,
        spend_loader: SpendLoader | None = None,
        *,
        window: float = WINDOW_SECONDS,
        lease_seconds: float = LEASE_SECONDS,
        fail_open: bool = False,
        prefix: str = "tr",
    ) -> None:
        self.client = client
        self._loader = spend_loader
        self.window_ms = int(window * 1000)
        self.lease_ms = int(lease_seconds * 1000)
        self.fail_open = fail_open
        self.prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._add_spend = client.register_script(_ADD_SPEND)

    @classmethod
    def from_url(
        cls,
        url: str,
        spend_loader: SpendLoader | None = None,
        *,
        window: float = WINDOW_SECONDS,
        lease_seconds: float = LEASE_SECONDS,
        fail_open: bool = False,
    ) -> RedisLimiter:
        """A limiter on a ``redis://`` (or ``rediss://``, ``unix://``) URL."""
        client = aioredis.Redis.from_url(url)
        return cls(
            client, spend_loader, window=window, lease_seconds=lease_seconds, fail_open=fail_open
        )

    def _keys(self, key_id: str, *names: str) -> list[str]:
        return [f"{self.prefix}:{{{key_id}}}:{name}" for name in names]

    async def acquire(self, key_id: str, limits: Limits, est_tokens: int) -> Ticket:
        est_tokens = max(0, int(est_tokens))
        ticket_id = token_hex(8)
        period = limits.budget_period if limits.budget_usd is not None else None
        tracked = frozenset(
            name
            for name, on in (
                ("rpm", limits.rpm),
                ("tpm", limits.tpm),
                ("concurrency", limits.max_concurrent),
            )
            if on
        )
        ticket = Ticket(key_id, ticket_id, est_tokens, tracked, period)
        try:
            if limits.budget_usd is not None:
                await self.check_budget(key_id, limits.budget_usd, limits.budget_period)
            if not tracked:
                return ticket
            verdict, wait_ms = await self._acquire(
                keys=self._keys(key_id, "req", "tok", "tokw", "lease"),
                args=[
                    limits.rpm or 0,
                    limits.tpm or 0,
                    limits.max_concurrent or 0,
                    est_tokens,
                    ticket_id,
                    self.window_ms,
                    self.lease_ms,
                ],
            )
        except RedisError as exc:
            return self._unavailable(ticket, exc)
        verdict = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        wait = int(wait_ms) / 1000
        if verdict == "ok":
            return ticket
        if verdict == "too_large":
            raise too_large_error(est_tokens, limits.tpm or 0)
        if verdict == "rpm":
            raise rate_error("rpm", limits.rpm or 0, wait)
        if verdict == "tpm":
            raise rate_error("tpm", limits.tpm or 0, wait, f" This request needs ~{est_tokens}.")
        raise rate_error("concurrency", limits.max_concurrent or 0, wait)

    def _unavailable(self, ticket: Ticket, exc: RedisError) -> Ticket:
        if self.fail_open:
            log.warning("rate limiter unavailable, admitting without limits: %s", exc)
            ticket.released = True  # nothing was recorded, so nothing to undo
            return ticket
        raise GatewayError(
            "server",
            "The rate limiter is unavailable; try again shortly.",
            status=503,
            code="limiter_unavailable",
            headers={"Retry-After": "1"},
        ) from exc

    async def release(self, ticket: Ticket, actual_tokens: int, cost_usd: float = 0.0) -> None:
        if ticket.released:
            return
        ticket.released = True
        try:
            if ticket.tracked:
                await self._release(
                    keys=self._keys(ticket.key_id, "tok", "tokw", "lease"),
                    args=[
                        ticket.id,
                        max(0, int(actual_tokens)),
                        ticket.est_tokens,
                        self.window_ms,
                        1 if "tpm" in ticket.tracked else 0,
                    ],
                )
            if ticket.budget_period is not None and cost_usd > 0:
                await self._add(ticket.key_id, ticket.budget_period, cost_usd)
        except RedisError as exc:
            log.warning("rate limiter: could not release %s: %s", ticket.id, exc)

    def _spend_key(self, key_id: str, period: str) -> tuple[str, int]:
        name = self._keys(key_id, f"spend:{period_id(period)}")[0]
        _, end = period_bounds(period)
        if end is None:
            return name, 0
        remaining = (end - datetime.now(UTC).replace(tzinfo=None)).total_seconds()
        return name, int(remaining) + 86400

    async def _add(self, key_id: str, period: str, cost: float) -> None:
        name, ttl = self._spend_key(key_id, period)
        create = 1 if self._loader is None else 0
        await self._add_spend(keys=[name], args=[repr(float(cost)), ttl, create])

    async def spent(self, key_id: str, period: str) -> float:
        name, ttl = self._spend_key(key_id, check_period(period))
        value = await self.client.get(name)
        if value is None:
            if self._loader is None:
                return 0.0
            since, _ = period_bounds(period)
            seed = float(await self._loader(key_id, since))
            # Only the first replica's seed counts; later spend was added on top of it.
            await self.client.set(name, repr(seed), nx=True, ex=ttl or None)
            value = await self.client.get(name)
        return float(value or 0.0)

    async def check_budget(self, key_id: str, budget_usd: float | None, period: str) -> None:
        if budget_usd is None:
            return
        try:
            spent = await self.spent(key_id, period)
        except RedisError as exc:
            self._unavailable(Ticket(key_id, "", 0, frozenset()), exc)
            return
        if spent >= budget_usd:
            raise budget_error(spent, budget_usd, period)

    async def aclose(self) -> None:
        await self.client.aclose()
