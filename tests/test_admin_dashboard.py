"""The operator's dashboard: ``/admin`` and the endpoints its charts read.

- ``/admin/stats`` and ``/admin/stats/spend`` (``server/admin_stats.py``) in process,
  on SQLite and PostgreSQL, with rows inserted through the store: exact sums, bucket
  edges, nearest-rank TTFT percentiles, key filter, budget periods; the master key
  (401 without it or with a wrong one, 403 when none is configured); bad input gets a
  clear 400; schemathesis against its OpenAPI fragment on a live server.
- The page's routes (``server/web.py``): CSP, ETag, the vendored uPlot with its licence,
  pinned to the version ``scripts/vendor-charts.sh`` fetches.
- Chromium (Debian's, through the ``playwright`` package) on a real gateway process with
  a master key and a SQLite database: unlock, create a key (its secret shown once), use
  it, see the charts draw it, revoke and rotate, inline errors, light and dark, a phone.

Missing chromium or playwright skips the browser tests with the reason; under
``CI=true`` it fails instead. ``UPDATE_SCREENSHOTS=1`` rewrites ``docs/admin-light.png``
and ``docs/admin-dark.png``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from starlette.applications import Starlette
from starlette.testclient import TestClient
from support.browser import chromium, skip_or_fail
from support.net import free_port, wait_listening
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway
from support.services import shared_postgres

from tokenrelay.server.admin import AdminAPI
from tokenrelay.server.admin_schema import openapi_document
from tokenrelay.server.admin_stats import (
    MAX_BUCKETS,
    STATS_OPENAPI,
    merge_openapi,
    spend_report,
    stats_routes,
)
from tokenrelay.server.web import (
    CONTENT_SECURITY_POLICY,
    admin_page_routes,
    load_assets,
    web_routes,
)
from tokenrelay.store import KeySpec, Store, UsageRow

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "src" / "tokenrelay" / "web"
MASTER = "master-key-for-dashboard-tests"
AUTH = {"Authorization": f"Bearer {MASTER}"}
A, B = "openai/gpt-4o", "anthropic/claude-sonnet-4-5"


# ---- the stats API, in process ------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'stats.db'}"
    else:
        url = await asyncio.to_thread(shared_postgres().new_database)
    opened = await Store.open(url)
    yield opened
    await opened.close()


def client_for(api: AdminAPI) -> httpx.AsyncClient:
    app = Starlette(routes=[*stats_routes(api), *api.routes])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def row(rid: str, model: str, key: str | None, when: str, **fields: Any) -> UsageRow:
    return UsageRow(request_id=rid, model=model, key_id=key, created_at=at(when), **fields)


async def seed(store: Store) -> tuple[str, str]:
    """Two keys and rows around the edges of 2026-03-10 08:30 .. 12:00 (see the test)."""
    k1 = (await store.create_key(KeySpec(name="one"))).key.id
    k2 = (await store.create_key(KeySpec(name="two"))).key.id
    rows = [
        row("c1", A, k1, "2026-03-09 23:59:59", input_tokens=7),  # the day before
        row("a0", A, k1, "2026-03-10 08:20:00", input_tokens=1000),  # before since
        row(
            "a1", A, k1, "2026-03-10 08:45:00", input_tokens=10, output_tokens=20,
            cost_usd=0.001, ttft_ms=100.0, cached_tokens=4, cache_saved_usd=0.0002,
        ),
        row("a2", A, k1, "2026-03-10 08:59:59.999999", input_tokens=1, output_tokens=2),
        row("a3", A, k1, "2026-03-10 09:00:00", outcome="error"),
        row(
            "a4", A, k1, "2026-03-10 09:30:00", input_tokens=5, output_tokens=7,
            cost_usd=0.0005, ttft_ms=300.0, outcome="cancelled",
        ),
        *[
            row(
                f"a{5 + i}", A, k2, f"2026-03-10 09:{40 + i}:00", input_tokens=1,
                output_tokens=1, cost_usd=0.0001, ttft_ms=10.0 * (i + 1),
            )
            for i in range(10)
        ],
        row("a15", A, k1, "2026-03-10 12:00:00", input_tokens=1000),  # until: excluded
        row("b1", B, k2, "2026-03-10 10:15:00", outcome="rate_limit_error"),
        row(
            "b2", B, k2, "2026-03-10 11:59:59", input_tokens=100, output_tokens=50,
            cost_usd=0.25, ttft_ms=1234.5,
        ),
        row(
            "b3", B, None, "2026-03-10 11:00:00", input_tokens=3, output_tokens=4,
            cost_usd=0.0, ttft_ms=40.0, outcome="disconnected",
        ),
    ]  # fmt: skip
    await store.insert_usage(rows)
    return k1, k2


def nearest_rank(values: list[float], p: float) -> float:
    """The reference: the value at rank ceil(p * n) of the sorted values."""
    ordered = sorted(values)
    return ordered[math.ceil(p * len(ordered)) - 1]


async def test_stats_by_hour_are_exact(store: Store) -> None:
    await seed(store)
    async with client_for(AdminAPI(store, MASTER)) as http:
        query = "since=2026-03-10T08:30:00Z&until=2026-03-10T12:00:00Z&bucket=hour"
        response = await http.get(f"/admin/stats?{query}", headers=AUTH)
        assert response.status_code == 200, response.text
        report = response.json()
    assert report["since"] == "2026-03-10T08:30:00Z" and report["until"] == "2026-03-10T12:00:00Z"
    assert report["bucket"] == "hour" and report["key_id"] is None
    assert report["buckets"] == [f"2026-03-10T{h:02}:00:00Z" for h in (8, 9, 10, 11)]
    assert [m["model"] for m in report["models"]] == [A, B]  # busiest first
    a, b = (m["series"] for m in report["models"])
    assert a["requests"] == [2, 12, 0, 0]
    assert a["input_tokens"] == [11, 15, 0, 0] and a["output_tokens"] == [22, 17, 0, 0]
    assert a["cost_usd"] == pytest.approx([0.001, 0.0015, 0, 0], abs=1e-12)
    assert a["errors"] == [0, 1, 0, 0]  # "cancelled" is the client's choice, not an error
    assert a["error_rate"] == [0.0, pytest.approx(1 / 12), None, None]
    # 09:00: [10, 20, ..., 100, 300]: p50 at rank ceil(5.5) = 6, p95 at rank ceil(10.45) = 11
    assert a["ttft_p50_ms"] == [100.0, 60.0, None, None]
    assert a["ttft_p95_ms"] == [100.0, 300.0, None, None]
    assert b["requests"] == [0, 0, 1, 2] and b["errors"] == [0, 0, 1, 0]
    assert b["input_tokens"] == [0, 0, 0, 103] and b["output_tokens"] == [0, 0, 0, 54]
    assert b["cost_usd"] == pytest.approx([0, 0, 0, 0.25], abs=1e-12)
    assert b["error_rate"] == [None, None, 1.0, 0.0]
    assert b["ttft_p50_ms"] == [None, None, None, 40.0]
    assert b["ttft_p95_ms"] == [None, None, None, 1234.5]

    ta, tb = (m["totals"] for m in report["models"])
    assert ta == {
        "requests": 14,
        "input_tokens": 26,
        "output_tokens": 39,
        "cost_usd": pytest.approx(0.0025, abs=1e-12),
        "cached_tokens": 4,  # of a1's 10 prompt tokens
        "cache_hit_rate": pytest.approx(4 / 26),
        "cache_saved_usd": pytest.approx(0.0002, abs=1e-12),
        "errors": 1,
        "client_ended": 1,
        "error_rate": pytest.approx(1 / 14),
        "ttft_p50_ms": 60.0,
        "ttft_p95_ms": 300.0,
    }
    assert (tb["requests"], tb["errors"], tb["client_ended"]) == (3, 1, 1)
    assert (tb["ttft_p50_ms"], tb["ttft_p95_ms"]) == (40.0, 1234.5)
    everything = report["totals"]
    assert (everything["requests"], everything["input_tokens"], everything["output_tokens"]) == (
        17,
        129,
        93,
    )
    assert everything["cost_usd"] == pytest.approx(0.2525, abs=1e-12)
    assert everything["error_rate"] == pytest.approx(2 / 17)
    ttfts = [100.0, 300.0, *[10.0 * (i + 1) for i in range(10)], 1234.5, 40.0]
    assert everything["ttft_p50_ms"] == nearest_rank(ttfts, 0.5) == 60.0
    assert everything["ttft_p95_ms"] == nearest_rank(ttfts, 0.95) == 1234.5


async def test_stats_by_day_and_by_key(store: Store) -> None:
    _, k2 = await seed(store)
    async with client_for(AdminAPI(store, MASTER)) as http:
        query = "since=2026-03-09&until=2026-03-11&bucket=day"
        by_day = (await http.get(f"/admin/stats?{query}", headers=AUTH)).json()
        assert by_day["buckets"] == ["2026-03-09T00:00:00Z", "2026-03-10T00:00:00Z"]
        a, b = (m["series"] for m in by_day["models"])
        assert a["requests"] == [1, 16] and a["input_tokens"] == [7, 2026]
        assert b["requests"] == [0, 3]

        query = f"since=2026-03-10T08:30:00Z&until=2026-03-10T12:00:00Z&key_id={k2}"
        mine = (await http.get(f"/admin/stats?{query}", headers=AUTH)).json()
        assert mine["bucket"] == "hour" and mine["key_id"] == k2  # a short span: by hour
        a, b = (m["series"] for m in mine["models"])
        assert a["requests"] == [0, 10, 0, 0] and b["requests"] == [0, 0, 1, 1]
        assert (a["ttft_p50_ms"][1], a["ttft_p95_ms"][1]) == (50.0, 100.0)
        nobody = await http.get("/admin/stats?since=2026-03-01&key_id=key_nobody", headers=AUTH)
        assert nobody.json()["models"] == [] and nobody.json()["totals"]["requests"] == 0
        assert nobody.json()["bucket"] == "day"  # a long span without bucket: by day


async def test_stats_periods_defaults_and_limits(store: Store) -> None:
    async with client_for(AdminAPI(store, MASTER)) as http:
        default = (await http.get("/admin/stats", headers=AUTH)).json()
        assert default["bucket"] == "hour" and len(default["buckets"]) in (24, 25)
        since, until = (datetime.fromisoformat(default[k]) for k in ("since", "until"))
        assert until - since == timedelta(hours=24)
        assert until - datetime.now(UTC) < timedelta(seconds=5)
        month = (await http.get("/admin/stats?bucket=day", headers=AUTH)).json()
        assert len(month["buckets"]) in (30, 31)
        # Too long a span is cut to MAX_BUCKETS whole buckets, and says so.
        long = (await http.get("/admin/stats?since=2000-01-01&bucket=hour", headers=AUTH)).json()
        assert len(long["buckets"]) == MAX_BUCKETS and long["since"] == long["buckets"][0]
        backwards = "/admin/stats?since=2026-03-10&until=2026-03-09"
        empty = (await http.get(backwards, headers=AUTH)).json()
        assert empty["buckets"] == [] and empty["models"] == []
        assert empty["totals"]["requests"] == 0 and empty["totals"]["error_rate"] is None
        ancient = await http.get("/admin/stats?until=0001-01-01T01:00:00Z", headers=AUTH)
        assert ancient.status_code == 200 and len(ancient.json()["buckets"]) == 1
        for query, param in [
            ("bucket=week", "bucket"),
            ("since=yesterday", "since"),
            ("until=2026-02-30", "until"),
            ("since=2026-01-01T10:00", "since"),
            ("key_id=", "key_id"),
            ("key_id=" + "k" * 33, "key_id"),
        ]:
            bad = await http.get(f"/admin/stats?{query}", headers=AUTH)
            assert bad.status_code == 400, query
            error = bad.json()["error"]
            assert error["param"] == param and error["type"] == "invalid_request_error"
        head = await http.head("/admin/stats", headers=AUTH)
        assert head.status_code == 200
        wrong = await http.post("/admin/stats", headers=AUTH)
        assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, HEAD"


async def test_spend_per_key_in_its_budget_period(store: Store) -> None:
    daily = (await store.create_key(KeySpec(name="d", budget_usd=1, budget_period="daily"))).key
    monthly = (await store.create_key(KeySpec(name="m", budget_usd=10))).key
    total = (await store.create_key(KeySpec(name="t", budget_period="total"))).key
    unused = (await store.create_key(KeySpec(name="unused"))).key
    gone = (await store.create_key(KeySpec(name="gone"))).key
    await store.revoke_key(gone.id)
    await store.insert_usage(
        [
            row("d1", A, daily.id, "2026-03-10 01:00:00", cost_usd=0.2),
            row("d2", A, daily.id, "2026-03-09 23:59:59", cost_usd=0.5),  # yesterday
            row("m1", A, monthly.id, "2026-03-01 00:00:00", cost_usd=1.0),
            row("m2", A, monthly.id, "2026-02-28 23:59:59", cost_usd=2.0),  # last month
            row("m3", A, monthly.id, "2026-03-10 11:00:00"),  # unpriced
            row("t1", B, total.id, "2025-01-01 00:00:00", cost_usd=4.0),
            row("g1", B, gone.id, "2026-03-10 11:00:00", cost_usd=0.125),
        ]
    )
    async with store.engine.connect() as conn:
        report = await spend_report(conn, now=at("2026-03-10 12:00:00"))
    spend = {s.key_id: s for s in report.data}
    # Every key, revoked ones too (in creation order: created_at, then id).
    assert sorted(spend) == sorted([daily.id, monthly.id, total.id, unused.id, gone.id])
    d, m, t = spend[daily.id], spend[monthly.id], spend[total.id]
    assert (d.spend_usd, d.total_spend_usd, d.requests) == (0.2, 0.7, 2)
    assert d.period_start == datetime(2026, 3, 10, tzinfo=UTC)
    assert d.period_end == datetime(2026, 3, 11, tzinfo=UTC)
    assert (m.spend_usd, m.total_spend_usd, m.requests) == (1.0, 3.0, 3)
    assert m.period_start == datetime(2026, 3, 1, tzinfo=UTC) and m.budget_usd == 10
    assert m.last_used_at == datetime(2026, 3, 10, 11, tzinfo=UTC)
    assert (t.spend_usd, t.period_start, t.period_end) == (4.0, None, None)
    assert spend[unused.id].requests == 0 and spend[unused.id].last_used_at is None
    assert spend[gone.id].status == "revoked" and spend[gone.id].spend_usd == 0.125

    async with client_for(AdminAPI(store, MASTER)) as http:
        response = await http.get("/admin/stats/spend", headers=AUTH)
        assert response.status_code == 200
        listed = {s["key_id"]: s for s in response.json()["data"]}
        assert listed[total.id]["spend_usd"] == 4.0 and listed[gone.id]["status"] == "revoked"


async def test_only_the_master_key_gets_in(store: Store) -> None:
    virtual = (await store.create_key(KeySpec(name="not-admin"))).secret
    async with client_for(AdminAPI(store, MASTER)) as http:
        for path in ("/admin/stats", "/admin/stats/spend"):
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": f"Bearer {virtual}"},
                {"x-api-key": MASTER + "x"},
            ):
                response = await http.get(path, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.headers["www-authenticate"] == "Bearer"
                assert response.json()["error"]["type"] == "authentication_error"
            assert (await http.get(path, headers={"x-api-key": MASTER})).status_code == 200
    async with client_for(AdminAPI(store, None)) as http:
        disabled = await http.get("/admin/stats", headers=AUTH)
        assert disabled.status_code == 403 and disabled.json()["error"]["code"] == "admin_disabled"
    async with client_for(AdminAPI(None, MASTER)) as http:  # the store is not attached yet
        assert (await http.get("/admin/stats/spend", headers=AUTH)).status_code == 503
        assert (await http.get("/admin/stats")).status_code == 401  # the key is checked first


def test_openapi_fragment_merges_into_the_admin_document() -> None:
    merged = merge_openapi(openapi_document())
    assert set(STATS_OPENAPI["paths"]) == {"/admin/stats", "/admin/stats/spend"}
    assert set(merged["paths"]) >= {"/admin/keys", "/admin/usage", *STATS_OPENAPI["paths"]}
    schemas = merged["components"]["schemas"]
    assert {"StatsReport", "SpendReport", "ErrorBody", "Key"} <= set(schemas)
    text = json.dumps(merged)
    for ref in re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', text):
        assert ref in schemas, ref
    assert merge_openapi(openapi_document()) == merged  # pure: the original is untouched
    assert "/admin/stats" not in openapi_document()["paths"]


# ---- schemathesis against a live server ------------------------------------------------


@pytest.fixture(scope="module")
def live_stats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    database = tmp_path_factory.mktemp("stats-live") / "stats.db"
    api = AdminAPI(None, MASTER)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        api.store = await Store.open(f"sqlite:///{database}")
        await seed(api.store)
        yield
        await api.store.close()

    port = free_port()
    app = Starlette(routes=[*stats_routes(api), *api.routes], lifespan=lifespan)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_listening(port)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


SCHEMA = schemathesis.openapi.from_dict(merge_openapi(openapi_document()))
OPERATIONS = [
    op for op in (result.ok() for result in SCHEMA.get_all_operations()) if "/stats" in op.path
]


@SCHEMA.auth()
class MasterKeyAuth:
    def get(self, case: Any, context: Any) -> str:
        return MASTER

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_stats_api_conforms_to_its_openapi_fragment(
    operation: Any, mode: schemathesis.GenerationMode, live_stats: str
) -> None:
    """Every built-in schemathesis check on valid and invalid requests: no 5xx, the
    documented statuses and bodies, valid input accepted, invalid input refused."""
    statuses: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        statuses.append(case.call_and_validate(base_url=live_stats).status_code)

    check()
    if mode is schemathesis.GenerationMode.POSITIVE:
        assert 401 not in statuses and statuses, statuses


# ---- the page's routes -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def page_client() -> Iterator[TestClient]:
    app = Starlette(routes=[*web_routes(), *admin_page_routes(), *AdminAPI(None, MASTER).routes])
    with TestClient(app) as client:
        yield client


def test_admin_page_is_served_from_the_package(page_client: TestClient) -> None:
    page = page_client.get("/admin")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert page.headers["cache-control"] == "no-cache" and page.headers["x-frame-options"] == "DENY"
    etag = page.headers["etag"]
    assert page_client.get("/admin", headers={"If-None-Match": etag}).status_code == 304
    assert page_client.head("/admin").status_code == 200
    slash = page_client.get("/admin/", follow_redirects=False)
    assert slash.status_code == 308 and slash.headers["location"] == "/admin"
    for path, content_type in [
        ("/static/admin.js", "text/javascript; charset=utf-8"),
        ("/static/admin.css", "text/css; charset=utf-8"),
        ("/static/vendor/uplot/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
        ("/static/vendor/uplot/uPlot.min.css", "text/css; charset=utf-8"),
    ]:
        response = page_client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == content_type
    # Other /admin/… paths still reach the admin API's JSON catch-all.
    other = page_client.get("/admin/nothing", headers=AUTH)
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"


def test_vendored_chart_library_is_pinned_and_licensed() -> None:
    script = (ROOT / "scripts" / "vendor-charts.sh").read_text()
    version = re.search(r"^VERSION=(\S+)$", script, re.M)
    assert version is not None and re.search(r"^INTEGRITY=sha512-\S+$", script, re.M)
    vendor = WEB / "vendor" / "uplot"
    bundle = (vendor / "uPlot.iife.min.js").read_text()
    assert bundle.startswith(f"/*! https://github.com/leeoniya/uPlot (v{version.group(1)}) */")
    licence = (vendor / "LICENSE").read_text()
    assert "MIT License" in licence and "Leon Sorokin" in licence
    assert {"vendor/uplot/uPlot.iife.min.js", "vendor/uplot/uPlot.min.css"} <= set(load_assets())
    # A bundle that evaluates strings would need 'unsafe-eval', which the CSP refuses.
    assert "eval(" not in bundle and "new Function" not in bundle


def test_admin_page_works_under_the_strict_csp() -> None:
    html = (WEB / "admin.html").read_text()
    for script in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in script, f"inline script {script}"
    assert not re.search(r"<style\b", html) and not re.search(r"\sstyle\s*=", html)
    assert not re.search(r"\son[a-z]+\s*=", html, re.I), "event handler attribute"
    assert "javascript:" not in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "external asset"
    code = (WEB / "admin.js").read_text()
    for banned in (".innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert banned not in code, banned


# ---- Chromium against a real gateway -----------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def admin_gateway(workdir: Path, fake: FakeUpstream, name: str) -> Gateway:
    folder = workdir / name
    folder.mkdir(exist_ok=True)
    config = gateway_config(
        fake,
        master_key=MASTER,
        database_url=f"sqlite:///{folder}/x.db",
        usage={"flush_interval": 0.1, "spill_dir": str(folder / "spool")},
    )
    gw = start_gateway(workdir, config)
    page = httpx.get(f"{gw.url}/admin", timeout=5)
    stats = httpx.get(f"{gw.url}/admin/stats", headers=AUTH, timeout=5)
    if page.status_code != 200 or stats.status_code != 200:
        gw.proc.stop()
        skip_or_fail(
            "the gateway does not serve the dashboard: create_app() must mount "
            "admin_page_routes() and stats_routes(admin) before the admin API's routes"
        )
    return gw


@pytest.fixture(scope="module")
def dash(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    gw = admin_gateway(workdir, fake, "dash")
    yield gw
    gw.proc.stop()


class Page:
    """A page in a fresh context, with the errors it logged. The page's CSP forbids the
    string evaluation of Playwright's wait_for_function; ``until`` polls evaluate."""

    def __init__(self, browser: Any, base: str, width: int = 1280, height: int = 900, **kw: Any):
        self.context = browser.new_context(viewport={"width": width, "height": height}, **kw)
        self.page = self.context.new_page()
        self.base = base
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def until(self, js: str, timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.page.evaluate(js)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {js}")
            time.sleep(0.05)

    def text(self, selector: str) -> str:
        return self.page.text_content(selector) or ""

    def unlock(self, key: str = MASTER) -> None:
        self.page.goto(f"{self.base}/admin")
        self.page.wait_for_selector("#master-key", state="visible")
        self.page.fill("#master-key", key)
        self.page.click("#key-form button[type=submit]")

    def row(self, name: str) -> Any:
        return self.page.locator("#keys-body tr", has=self.page.locator(".key-name", has_text=name))

    def close(self) -> None:
        self.context.close()


def chat(gw: Gateway, secret: str, text: str, stream: bool = False) -> httpx.Response:
    body = {
        "model": "local/echo",
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    }
    headers = {"Authorization": f"Bearer {secret}"}
    return httpx.post(f"{gw.base_url}/chat/completions", json=body, headers=headers, timeout=10)


def test_dashboard_key_life_cycle_and_charts(browser: Any, dash: Gateway) -> None:
    page = Page(browser, dash.url)
    try:
        # Locked until the master key is given; a wrong one is refused inline.
        page.page.goto(f"{dash.url}/admin")
        page.page.wait_for_selector("#locked", state="visible")
        assert page.page.is_hidden("#dashboard") and page.page.is_visible("#key-panel")
        page.unlock("not-the-master-key")
        page.until("() => document.querySelector('#key-hint').classList.contains('warn')")
        assert "refused" in page.text("#key-hint") and page.page.is_hidden("#dashboard")
        page.unlock()
        page.page.wait_for_selector("#dashboard", state="visible")
        key = "() => sessionStorage.getItem('tokenrelay.masterKey')"
        assert page.page.evaluate(key) == MASTER

        # Inline errors: a missing name, a budget that is not an amount, then the server's.
        page.page.click("#new-key")
        page.page.click("#create-form button[type=submit]")
        page.page.wait_for_selector("#create-error", state="visible")
        assert "name" in page.text("#create-error")
        assert page.page.get_attribute("#f-name", "aria-invalid") == "true"
        page.page.fill("#f-name", "e2e-dashboard")
        page.page.fill("#f-budget", "lots")
        page.page.click("#create-form button[type=submit]")
        page.until("() => document.querySelector('#create-error').textContent.includes('USD')")
        assert page.page.get_attribute("#f-budget", "aria-invalid") == "true"
        page.page.fill("#f-budget", "5")
        page.page.fill("#f-expires", "2020-01-01T00:00")  # no zone: the API says so
        page.page.click("#create-form button[type=submit]")
        page.until("() => document.querySelector('#create-error').textContent.includes('400')")
        assert page.page.get_attribute("#f-expires", "aria-invalid") == "true"

        # Create with the options of `tokenrelay keys create`: the secret is shown once.
        page.page.fill("#f-models", "local/*, fake/*")
        page.page.fill("#f-rpm", "600")
        page.page.fill("#f-tpm", "100000")
        page.page.fill("#f-max-concurrent", "4")
        page.page.select_option("#f-period", "daily")
        page.page.fill("#f-expires", "30d")
        page.page.click("#create-form button[type=submit]")
        page.page.wait_for_selector("#secret-box", state="visible")
        secret = page.text("#secret-value")
        assert re.fullmatch(r"sk-[A-Za-z0-9_-]{40}", secret), secret
        assert page.text("#secret-name") == "e2e-dashboard" and page.page.is_hidden("#create-form")
        row = page.row("e2e-dashboard")
        row.wait_for()
        cells = row.inner_text()
        assert secret not in cells and secret[:7] in cells  # only the prefix is listed
        for shown in ("local/*", "fake/*", "600 rpm", "100K tpm", "4 concurrent", "$0 of $5.00"):
            assert shown in cells, (shown, cells)
        assert "today" in cells and "active" in cells and "never" in cells
        listed = httpx.get(f"{dash.url}/admin/keys", headers=AUTH, timeout=5).json()["data"]
        [created] = [k for k in listed if k["name"] == "e2e-dashboard"]
        assert created["models"] == ["local/*", "fake/*"] and created["budget_period"] == "daily"
        assert (created["rpm"], created["tpm"], created["max_concurrent"]) == (600, 100000, 4)
        expires = datetime.fromisoformat(created["expires_at"]) - datetime.now(UTC)
        assert timedelta(days=29, hours=23) < expires <= timedelta(days=30)
        page.page.click("#secret-done")
        assert page.page.is_hidden("#secret-box") and page.text("#secret-value") == ""
        assert secret not in page.page.content()

        # Requests with the key, then the charts draw them (after a refresh).
        for i in range(3):
            assert chat(dash, secret, f"hello {i}", stream=i == 2).status_code == 200
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            page.page.click("#refresh")
            time.sleep(0.4)
            if page.text("#total-requests") == "3":  # all three recorded
                break
        for chart in ("requests", "cost", "input", "output", "errors", "ttft"):
            figure = f"#chart-{chart}"
            assert page.page.locator(f"{figure} canvas").count() == 1, chart
            assert int(page.page.get_attribute(figure, "data-series") or 0) >= 1, chart
        for chart in ("requests", "input", "output", "ttft"):
            assert int(page.page.get_attribute(f"#chart-{chart}", "data-points") or 0) > 0
        assert "local/echo" in page.text("#legend")
        assert page.text("#total-requests") == "3"
        # the keys table is fetched on its own: refresh until its spend caught up too
        deadline = time.monotonic() + 15
        while "3 requests" not in page.text("#keys-body") and time.monotonic() < deadline:
            page.page.click("#refresh")
            time.sleep(0.4)
        assert "3 requests" in page.text("#keys-body")
        # The tooltip shows the hovered bucket's values.
        over = page.page.locator("#chart-requests .u-over")
        over.scroll_into_view_if_needed()
        box = over.bounding_box()
        over.hover(position={"x": box["width"] - 3, "y": box["height"] / 2})
        page.page.wait_for_selector("#chart-requests .chart-tip", state="visible")
        assert "local/echo" in page.text("#chart-requests .chart-tip")

        # The period picker asks for days, and remembers the choice.
        page.page.click("#period button[data-period='30d']")
        page.until("() => document.querySelector('#chart-note').textContent.includes('UTC day')")
        assert (
            page.page.get_attribute("#period button[data-period='30d']", "aria-pressed") == "true"
        )
        assert int(page.page.get_attribute("#chart-requests", "data-points") or 0) == 1

        # Rotate: the new secret is shown once; the old one stops working at once.
        rotate = row.locator("button[data-action=rotate]")
        rotate.click()
        assert rotate.inner_text() == "Confirm rotate"
        rotate.click()
        page.until(
            f"() => document.querySelector('#secret-value').textContent.startsWith('sk-')"
            f" && document.querySelector('#secret-value').textContent !== '{secret}'"
        )
        rotated = page.text("#secret-value")
        assert chat(dash, rotated, "new").status_code == 200
        assert chat(dash, secret, "old").status_code == 401
        page.page.click("#secret-done")

        # Revoke: two clicks; the row says revoked, and the key is refused.
        revoke = page.row("e2e-dashboard").locator("button[data-action=revoke]")
        revoke.click()
        assert revoke.inner_text() == "Confirm revoke"
        revoke.click()
        page.until(
            "() => [...document.querySelectorAll('#keys-body tr')].some("
            "r => r.textContent.includes('e2e-dashboard') && r.classList.contains('revoked'))"
        )
        assert page.row("e2e-dashboard").locator("button").count() == 0
        assert chat(dash, rotated, "after").status_code == 401
        # "Show revoked" is what keeps revoked keys in the list after a reload.
        page.page.reload()
        page.page.wait_for_selector("#dashboard", state="visible")
        page.until("() => document.querySelector('#keys-body') !== null")
        time.sleep(0.3)
        assert page.row("e2e-dashboard").count() == 0
        page.page.check("#show-revoked")
        assert page.row("e2e-dashboard").count() == 1

        # Forget: the key leaves sessionStorage and the page locks.
        page.page.click("#key-toggle")
        page.page.click("#key-clear")
        assert page.page.evaluate(key) is None and page.page.is_visible("#locked")
        # Only the log lines of the refused requests: the wrong master key, the bad expiry.
        assert all(re.search(r"status of (401|400)", e) for e in page.errors), page.errors
    finally:
        page.close()


# ---- screenshots: light, dark and a phone, with a day of traffic --------------------------------

TRAFFIC = [  # model, share of minutes with a request, $ per input and output token, TTFT ms
    ("openai/gpt-4o-mini", 0.55, 0.15e-6, 0.6e-6, 320.0),
    ("anthropic/claude-sonnet-4-5", 0.32, 3e-6, 15e-6, 650.0),
    ("gemini/gemini-2.5-flash", 0.22, 0.3e-6, 2.5e-6, 420.0),
]


async def seed_traffic(url: str) -> list[str]:
    """A day of plausible traffic over three keys (deterministic), through the store;
    returns the keys' secrets."""
    store = await Store.open(url)
    try:
        specs = [
            KeySpec(name="mobile-app", models=["openai/*", "anthropic/*"], rpm=600, budget_usd=250),
            KeySpec(name="ci-evals", budget_usd=2, budget_period="daily", tpm=200_000),
            KeySpec(name="support-bot", models=[TRAFFIC[1][0]], rpm=120, max_concurrent=8),
        ]
        keys = [await store.create_key(spec) for spec in specs]
        rnd = random.Random(6)
        now = datetime.now(UTC).replace(tzinfo=None)
        rows = []
        for minute in range(2, 24 * 60, 3):
            when = now - timedelta(minutes=minute)
            load = 1 + 0.75 * math.sin((when.hour - 9) / 24 * 2 * math.pi)
            for model, share, per_in, per_out, ttft in TRAFFIC:
                if rnd.random() >= share * load * 0.9:
                    continue
                key = rnd.choice(keys if model != TRAFFIC[1][0] else keys[:1] + keys[2:])
                tokens_in, tokens_out = rnd.randint(200, 3000), rnd.randint(50, 900)
                outcome = "ok" if rnd.random() > 0.03 else rnd.choice(["error", "cancelled"])
                rows.append(
                    UsageRow(
                        request_id=f"seed-{len(rows)}",
                        model=model,
                        key_id=key.key.id,
                        input_tokens=tokens_in,
                        output_tokens=tokens_out,
                        cost_usd=tokens_in * per_in + tokens_out * per_out,
                        ttft_ms=round(ttft * rnd.lognormvariate(0, 0.3), 1),
                        outcome=outcome,
                        created_at=when,
                    )
                )
        await store.insert_usage(rows)
        return [k.secret for k in keys]
    finally:
        await store.close()


def test_dashboard_light_dark_phone(
    browser: Any, workdir: Path, fake: FakeUpstream, tmp_path: Path
) -> None:
    gw = admin_gateway(workdir, fake, "shots")
    try:
        url = gw.config["database_url"]
        with ThreadPoolExecutor(1) as pool:  # Playwright's loop runs in this thread
            secrets = pool.submit(asyncio.run, seed_traffic(url)).result()
        for i in range(4):
            assert chat(gw, secrets[1], f"a request through the gateway {i}").status_code == 200
        out = ROOT / "docs" if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path
        out.mkdir(exist_ok=True)
        backgrounds = {}
        for scheme in ("light", "dark"):
            page = Page(browser, gw.url, 1280, 900, color_scheme=scheme)
            try:
                page.unlock()
                page.page.wait_for_selector("#dashboard", state="visible")
                page.until("() => document.querySelectorAll('#legend .legend-item').length === 4")
                page.until("() => document.querySelectorAll('#keys-body tr').length === 3")
                page.page.mouse.move(0, 0)
                backgrounds[scheme] = page.page.evaluate(
                    "() => getComputedStyle(document.body).backgroundColor"
                )
                page.page.screenshot(path=str(out / f"admin-{scheme}.png"), full_page=True)
                # The toggle switches the theme; the charts redraw in its colours.
                axis = "() => document.querySelector('#chart-requests canvas').toDataURL()"
                before = page.page.evaluate(axis)
                page.page.click("#theme-toggle")
                page.until(f"() => ({axis})() !== {json.dumps(before)}")
                assert not page.errors, page.errors
            finally:
                page.close()
        light, dark = (
            sum(int(v) for v in re.findall(r"\d+", backgrounds[s])[:3]) for s in ("light", "dark")
        )
        assert light > 600 and dark < 150, backgrounds
        phone = Page(browser, gw.url, 390, 844, is_mobile=True)
        try:
            phone.unlock()
            phone.page.wait_for_selector("#dashboard", state="visible")
            phone.until("() => document.querySelectorAll('#keys-body tr').length === 3")
            width = phone.page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 390, f"the page is {width}px wide on a 390px screen"
            chart = phone.page.locator("#chart-requests canvas").bounding_box()
            assert chart is not None and chart["width"] <= 390
            phone.page.screenshot(path=str(tmp_path / "admin-phone.png"), full_page=True)
            assert not phone.errors, phone.errors
        finally:
            phone.close()
    finally:
        gw.proc.stop()
