"""Rate limits, concurrency and budgets, in memory and on a real Redis: concurrent
acquires never pass the documented bounds, and two processes share one limit."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from support.net import free_port
from support.services import shared_redis

from tokenrelay.events import GatewayError
from tokenrelay.limits import (
    Limiter,
    Limits,
    MemoryLimiter,
    RedisLimiter,
    create_limiter,
    period_bounds,
    period_id,
)

SRC = Path(__file__).resolve().parents[1] / "src"
Factory = Callable[..., Limiter]


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    """Builds limiters of one backend; each Redis one gets its own key prefix."""
    made: list[Limiter] = []

    def factory(**options: Any) -> Limiter:
        limiter: Limiter
        if request.param == "memory":
            limiter = MemoryLimiter(**options)
        else:
            url = shared_redis().url
            prefix = options.pop("prefix", "t" + secrets.token_hex(4))
            limiter = RedisLimiter.from_url(url, **options)
            assert isinstance(limiter, RedisLimiter)
            limiter.prefix = prefix
        made.append(limiter)
        return limiter

    yield factory
    for limiter in made:
        await limiter.aclose()


async def outcomes(
    limiter: Limiter, limits: Limits, n: int, est: int = 0
) -> tuple[list[Any], list[GatewayError]]:
    results = await asyncio.gather(
        *(limiter.acquire("k", limits, est) for _ in range(n)), return_exceptions=True
    )
    admitted = [r for r in results if not isinstance(r, BaseException)]
    rejected = [r for r in results if isinstance(r, GatewayError)]
    assert len(admitted) + len(rejected) == n, [r for r in results if isinstance(r, BaseException)]
    return admitted, rejected


async def test_rpm_under_concurrency_admits_exactly_the_limit(make: Factory) -> None:
    limiter = make()
    admitted, rejected = await outcomes(limiter, Limits(rpm=50), 200)
    assert len(admitted) == 50
    error = rejected[0]
    assert error.status == 429 and error.kind == "rate_limit" and "(rpm)" in error.message
    assert 1 <= int(error.headers["Retry-After"]) <= 60
    assert error.headers["x-ratelimit-limit-name"] == "rpm"
    for ticket in admitted:  # releasing does not give requests back: rpm counts starts
        await limiter.release(ticket, 0)
    assert len((await outcomes(limiter, Limits(rpm=50), 5))[0]) == 0


async def test_tpm_never_reserves_more_than_the_limit(make: Factory) -> None:
    limiter = make()
    admitted, rejected = await outcomes(limiter, Limits(tpm=1000), 100, est=30)
    assert len(admitted) == 33  # 33 * 30 = 990 <= 1000 < 34 * 30
    assert "(tpm)" in rejected[0].message and "~30" in rejected[0].message
    with pytest.raises(GatewayError, match="can never be admitted"):
        await limiter.acquire("k", Limits(tpm=1000), 1001)


async def test_tpm_reconciles_with_the_real_count(make: Factory) -> None:
    limiter = make()
    limits = Limits(tpm=100)
    ticket = await limiter.acquire("k", limits, 10)
    await limiter.release(ticket, 80)  # the answer was longer than estimated
    await limiter.release(ticket, 80)  # a second release changes nothing
    with pytest.raises(GatewayError, match="tpm"):
        await limiter.acquire("k", limits, 30)  # 80 + 30 > 100
    small = await limiter.acquire("k", limits, 20)  # 80 + 20 <= 100
    await limiter.release(small, 0)  # over-estimated: the room comes back
    again = await limiter.acquire("k", limits, 20)
    assert again.id != small.id


async def test_concurrency_slots_are_freed_by_release(make: Factory) -> None:
    limiter = make()
    limits = Limits(max_concurrent=5)
    admitted, rejected = await outcomes(limiter, limits, 50)
    assert len(admitted) == 5 and "max_concurrent" in rejected[0].message
    await limiter.release(admitted[0], 0)
    await limiter.release(admitted[1], 0)
    assert len((await outcomes(limiter, limits, 10))[0]) == 2


async def test_limits_are_per_key_and_none_means_unlimited(make: Factory) -> None:
    limiter = make()
    await limiter.acquire("a", Limits(rpm=1), 0)
    await limiter.acquire("b", Limits(rpm=1), 0)
    with pytest.raises(GatewayError):
        await limiter.acquire("a", Limits(rpm=1), 0)
    admitted, _ = await outcomes(limiter, Limits(), 100, est=10**6)
    assert len(admitted) == 100


async def test_the_window_slides(make: Factory) -> None:
    limiter = make(window=0.4)
    limits = Limits(rpm=3, tpm=300)
    assert len((await outcomes(limiter, limits, 10, est=50))[0]) == 3
    await asyncio.sleep(0.45)
    assert len((await outcomes(limiter, limits, 10, est=50))[0]) == 3
    # A reservation that aged out before release: only the underestimate is charged now.
    ticket = await limiter.acquire("late", Limits(tpm=100), 10)
    await asyncio.sleep(0.45)
    await limiter.release(ticket, 50)
    with pytest.raises(GatewayError, match="tpm"):
        await limiter.acquire("late", Limits(tpm=100), 70)  # 40 late + 70 > 100
    await limiter.acquire("late", Limits(tpm=100), 60)


async def test_memory_window_bound_is_exact_with_a_fake_clock() -> None:
    now = [1000.0]
    limiter = MemoryLimiter(clock=lambda: now[0])
    limits = Limits(rpm=10)
    times = []
    for step in range(240):  # a client retrying every 0.5 s for two minutes
        now[0] = 1000.0 + step * 0.5
        try:
            await limiter.acquire("k", limits, 0)
            times.append(now[0])
        except GatewayError as error:
            assert 1 <= int(error.headers["Retry-After"]) <= 60
    for i, start in enumerate(times):  # no 60 s window ever holds more than rpm
        assert sum(1 for t in times[i:] if t < start + 60) <= 10
    assert len(times) == 20  # and the limit is reached, not undershot


async def test_budget(make: Factory) -> None:
    seeded: list[tuple[str, datetime | None]] = []

    async def loader(key_id: str, since: datetime | None) -> float:
        seeded.append((key_id, since))
        return 0.75

    limiter = make(spend_loader=loader)
    limits = Limits(budget_usd=1.0, budget_period="daily")
    ticket = await limiter.acquire("b", limits, 0)
    assert seeded == [("b", period_bounds("daily")[0])]
    assert await limiter.spent("b", "daily") == pytest.approx(0.75)
    await limiter.release(ticket, 10, cost_usd=0.30)
    assert await limiter.spent("b", "daily") == pytest.approx(1.05)
    with pytest.raises(GatewayError) as over:
        await limiter.acquire("b", limits, 0)
    error = over.value
    assert error.status == 429 and error.code == "insufficient_quota"
    assert "$1.0500 spent of $1.00 today" in error.message
    assert 1 <= int(error.headers["Retry-After"]) <= 86400
    await limiter.check_budget("b", 2.0, "daily")  # a raised budget admits again
    await limiter.check_budget("b", None, "daily")
    assert len(seeded) == 1  # seeded once per period


async def test_budget_total_has_no_retry_after_and_counts_without_a_loader(make: Factory) -> None:
    limiter = make()
    ticket = await limiter.acquire("t", Limits(budget_usd=0.5, budget_period="total"), 0)
    await limiter.release(ticket, 0, cost_usd=0.5)
    with pytest.raises(GatewayError) as over:
        await limiter.check_budget("t", 0.5, "total")
    assert "Retry-After" not in over.value.headers and "in total" in over.value.message


def test_periods() -> None:
    now = datetime(2026, 12, 31, 23, 59)
    assert period_bounds("daily", now) == (datetime(2026, 12, 31), datetime(2027, 1, 1))
    assert period_bounds("monthly", now) == (datetime(2026, 12, 1), datetime(2027, 1, 1))
    assert period_bounds("total", now) == (None, None)
    assert (period_id("daily", now), period_id("monthly", now)) == ("2026-12-31", "2026-12")
    with pytest.raises(ValueError):
        period_bounds("weekly")


async def test_redis_down_fails_closed_or_open() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    closed = create_limiter(url)
    with pytest.raises(GatewayError) as failed:
        await closed.acquire("k", Limits(rpm=1), 0)
    assert failed.value.status == 503 and failed.value.headers["Retry-After"] == "1"
    with pytest.raises(GatewayError, match="unavailable"):
        await closed.check_budget("k", 1.0, "daily")
    opened = create_limiter(url, fail_open=True)
    ticket = await opened.acquire("k", Limits(rpm=1), 0)
    await opened.release(ticket, 5)  # nothing recorded, nothing to undo: no error
    await opened.check_budget("k", 1.0, "daily")
    await closed.aclose()
    await opened.aclose()
    assert isinstance(create_limiter(None), MemoryLimiter)


WORKER = """
import asyncio, sys, time
import redis.asyncio as aioredis
from tokenrelay.events import GatewayError
from tokenrelay.limits import Limits, RedisLimiter

async def main(url, prefix, attempts):
    limiter = RedisLimiter.from_url(url)
    limiter.prefix = prefix
    client = aioredis.Redis.from_url(url)
    await client.incr(prefix + ":ready")
    while not await client.exists(prefix + ":go"):
        await asyncio.sleep(0.001)
    async def one():
        try:
            await limiter.acquire("shared", Limits(rpm=60, max_concurrent=1000), 0)
            return 1
        except GatewayError:
            return 0
    admitted = 0
    for _ in range(attempts // 5):  # waves of 5 concurrent attempts, 5 ms apart
        admitted += sum(await asyncio.gather(*(one() for _ in range(5))))
        await asyncio.sleep(0.005)
    print(admitted)
    await client.aclose()
    await limiter.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_two_processes_share_one_limit_through_redis() -> None:
    import redis.asyncio as aioredis

    url, prefix = shared_redis().url, "p" + secrets.token_hex(4)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, prefix, "200"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for _ in range(2)
    ]
    client = aioredis.Redis.from_url(url)
    for _ in range(1000):  # until both are connected and polling for the start signal
        if int(await client.get(prefix + ":ready") or 0) == 2:
            break
        await asyncio.sleep(0.01)
    await client.set(prefix + ":go", 1)
    counts = []
    for worker in workers:
        out, err = await asyncio.to_thread(worker.communicate, timeout=30)
        assert worker.returncode == 0, err.decode()
        counts.append(int(out.decode().strip()))
    await client.aclose()
    assert sum(counts) == 60, counts  # one limit for both, exactly
    assert min(counts) > 0, counts  # and both really competed for it


# --- pricing (what budgets are spent in) -------------------------------------------------


def test_prices_cover_the_catalogue_and_say_where_they_come_from() -> None:
    from tokenrelay.catalog import ENV_PROVIDERS
    from tokenrelay.pricing import DEFAULT_PRICES, PRICES_TAKEN, PriceTable

    table = PriceTable()
    wanted = [f"{p.name}/{m}" for p in ENV_PROVIDERS for m in p.models]
    wanted += [
        f"anthropic/{m}" for m in ("claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5")
    ]
    wanted += ["gemini/gemini-2.5-pro", "gemini/gemini-2.5-flash"]
    for model in wanted:
        price = table.lookup(model)
        assert price is not None, model
        assert price.source, model  # a source, or the word UNSOURCED
        assert price.known or price.source.startswith("UNSOURCED"), model
    assert PRICES_TAKEN == "2026-11-21"
    assert all(p.input is None or p.input > 0 for p in DEFAULT_PRICES.values())


def test_cost_of_a_usage() -> None:
    from tokenrelay.events import Usage
    from tokenrelay.pricing import Price, PriceTable

    table = PriceTable()
    # gpt-4o: $2.50 in, $1.25 cached in, $10 out per million.
    usage = Usage(input=1_000_000, output=100_000, cached=400_000, reasoning=50_000)
    assert table.cost("openai/gpt-4o", usage) == pytest.approx(0.6 * 2.5 + 0.4 * 1.25 + 1.0)
    assert table.cost("openai/gpt-4o-2024-08-06", usage) == table.cost("gpt-4o", usage)
    assert table.cost("openai/gpt-4o-mini", usage) != table.cost("openai/gpt-4o", usage)
    # Anthropic cache writes have their own price; dated ids share the alias's price.
    sonnet = Usage(input=1000, output=100, cached=200, cache_write=300)
    expected = (500 * 3.0 + 200 * 0.30 + 300 * 3.75 + 100 * 15.0) / 1e6
    assert table.cost("anthropic/claude-sonnet-4-5-20250929", sonnet) == pytest.approx(expected)
    # Long prompts switch to the long-context tier.
    long = Usage(input=300_000, output=1000, cached=0)
    assert table.cost("gemini/gemini-2.5-pro", long) == pytest.approx(
        (300_000 * 2.5 + 1000 * 15) / 1e6
    )
    # Unknown or unsourced models have no cost rather than an invented one.
    assert table.cost("deepseek/deepseek-chat", usage) is None
    assert table.cost("nobody/new-model", usage) is None
    assert table.cost("openai/gpt-4o", None) == 0.0
    # Overrides from the config replace or add entries; a missing cached price bills input.
    custom = PriceTable({"deepseek-chat": {"input": 0.3, "output": 1.2}, "mine/*": Price(1, 2)})
    assert custom.cost("deepseek/deepseek-chat", Usage(input=10**6, cached=10**6)) == pytest.approx(
        0.3
    )
    assert custom.cost("mine/x", Usage(input=10**6, output=10**6)) == pytest.approx(3.0)
