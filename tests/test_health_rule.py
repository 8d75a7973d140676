"""The health rule (``health.py``) and the plan's use of it (``router.py``), the fake's
``fail_rate`` (exact, deterministic), probes of the local provider, the status page
switch: pure parts and in-process apps."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tokenrelay.config import parse
from tokenrelay.fake.options import parse_model
from tokenrelay.health import Health, HealthRules
from tokenrelay.protocols.registry import REGISTRY
from tokenrelay.providers.http import Endpoint, HTTPProvider
from tokenrelay.providers.local import LocalProvider
from tokenrelay.router import ModelSpec, Router
from tokenrelay.server.app import create_app
from tokenrelay.server.probes import probe


def test_failures_within_the_window_take_it_out_not_only_in_a_row() -> None:
    heard: list[tuple[str, bool]] = []
    rules = HealthRules(3, 30.0, 60.0, lambda name, out, reason: heard.append((name, out)))
    health = Health(rules, "p/m")
    for _ in range(2):
        health.failure("HTTP 500")
        health.success()  # a success in between does not reset the count
    assert health.state == "closed"
    health.failure("HTTP 500")
    assert health.state == "open" and not health.allows()
    assert heard == [("p/m", True)]


def test_old_failures_leave_the_window() -> None:
    health = Health(HealthRules(2, 30.0, 0.05), "p/m")
    health.failure()
    time.sleep(0.1)
    health.failure()
    assert health.state == "closed", "the first failure is older than the window"


def test_after_the_cooldown_one_test_request_decides() -> None:
    heard: list[bool] = []
    health = Health(HealthRules(1, 0.05, 60.0, lambda n, out, r: heard.append(out)), "p/m")
    health.failure()
    time.sleep(0.1)
    assert health.state == "half_open" and health.allows()
    health.begin()
    assert not health.allows(), "one test request at a time"
    health.failure()
    assert health.state == "open" and heard == [True], "still out: no second report"
    time.sleep(0.1)
    health.begin()
    health.success()
    assert health.state == "closed" and heard == [True, False]
    health.failure()
    assert health.state == "open", "(failures_to_open=1)"


def router_of(*names: str, fallback: str | None = None) -> Router:
    models = {"m": ModelSpec([(n, 1.0) for n in names], [fallback] if fallback else [])}
    anyname = HTTPProvider("up", REGISTRY.upstream("openai"), Endpoint("http://127.0.0.1:9"), ["*"])
    return Router([LocalProvider(0), anyname], models=models, breaker=(1, 60.0, 60.0))


def test_an_out_deployment_is_kept_out_of_retries_and_fallbacks() -> None:
    router = router_of("up/a", "up/b", fallback="up/c")
    plan = router.plan("m")
    out = next(c for c in plan.groups[0] if c.deployment.model == "b").deployment
    out.breaker.failure()
    picked = [plan.next() for _ in range(2)]
    names = [c.deployment.name for c in picked if c is not None]
    assert names == ["up/a", "up/c"], "the out one is skipped, fallback included"


def test_when_every_candidate_is_out_one_is_still_tried() -> None:
    router = router_of("up/a", "up/b")
    plan = router.plan("m")
    for c in plan.groups[0]:
        c.deployment.breaker.failure()
    first = plan.next()
    assert first is not None and first.deployment.breaker.out


@given(st.floats(min_value=0.0, max_value=1.0), st.integers(min_value=1, max_value=500))
def test_fail_rate_fails_exactly_that_fraction(rate: float, n: int) -> None:
    script = parse_model(f"gen/2?fail_rate={rate!r}")
    failed = sum(script.fails_at(k) for k in range(1, n + 1))
    assert failed == math.floor(n * script.fail_rate)  # type: ignore[operator]


def test_fail_rate_spreads_its_failures() -> None:
    script = parse_model("echo?fail_rate=0.3")
    assert [k for k in range(1, 11) if script.fails_at(k)] == [4, 7, 10]


def test_a_probe_of_the_local_provider() -> None:
    router = router_of("local/echo")
    deployment = router.plan("m").groups[0][0].deployment
    result = asyncio.run(probe(deployment, "hello there"))
    assert result.ok and result.status == 200 and result.ttft_ms is not None
    assert result.answer.startswith("hello")


@pytest.mark.parametrize("enabled", [True, False])
def test_the_status_page_can_be_turned_off(enabled: bool, tmp_path: object) -> None:
    config = parse(
        {"status_page": enabled, "database_url": f"sqlite:///{tmp_path}/s.db", "usage": {}},
        env={},
    )
    config.usage.spill_dir = f"{tmp_path}/spool"
    with TestClient(create_app(config), base_url="http://127.0.0.1") as client:
        page = client.get("/status")
        data = client.get("/status.json")
    if enabled:
        assert page.status_code == 200 and data.status_code == 200
        assert [m["model"] for m in data.json()["models"]] == ["local/echo", "local/embed"]
    else:
        assert page.status_code == 404 and data.status_code == 404


def test_a_live_swap_keeps_the_health_of_unchanged_channels() -> None:
    from tokenrelay.config import ProviderConfig
    from tokenrelay.server.app import build_router

    config = parse(
        {
            "env_providers": False,
            "retries": {"breaker_failures": 1, "breaker_cooldown": 60},
            "providers": [{"name": "kept", "base_url": "http://127.0.0.1:9/v1"}],
        },
        env={},
    )
    made: dict[str, tuple[object, object]] = {}
    live = [(ProviderConfig(name="db1", base_url="http://127.0.0.1:9/v1"), [], ("db", 1))]
    first = build_router(config, live, made)  # type: ignore[arg-type]
    kept = first.plan("kept/m").groups[0][0].deployment
    db1 = first.plan("db1/m").groups[0][0].deployment
    kept.breaker.failure("HTTP 500")
    db1.breaker.failure("HTTP 500")
    assert kept.breaker.out and db1.breaker.out
    # another channel added, db1 edited (a new signature): the next router
    live = [
        (ProviderConfig(name="db1", base_url="http://127.0.0.1:8/v1"), [], ("db", 2)),
        (ProviderConfig(name="db2", base_url="http://127.0.0.1:9/v1"), [], ("db", 3)),
    ]
    second = build_router(config, live, made)  # type: ignore[arg-type]
    second.carry_health(first)
    assert not second.plan("db1/m").groups[0][0].deployment.breaker.out, "edited: afresh"
    third = build_router(config, live, made)  # type: ignore[arg-type]
    third.carry_health(second)  # carried through a router that never planned it
    assert third.plan("kept/m").groups[0][0].deployment.breaker.out, "unchanged: still out"
