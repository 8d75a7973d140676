"""Health by rule, measured uptime, the status page and operator webhooks, end to end:
real gateway processes, a fake upstream of their own (its heal switch is global to
it), a real HTTP receiver for the webhook, the OpenAI SDK and Chromium as clients.

``UPDATE_SCREENSHOTS=1`` rewrites ``docs/status-light.png``, ``docs/status-dark.png`` and
``docs/admin-deployments.png``.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from support.browser import chromium
from support.procs import FakeUpstream, Gateway, gateway_config, start_fake, start_gateway
from support.usage_rows import rows

from tokenrelay.providers.keys import key_id

MASTER = "sk-master-health-test-0123456789"
SICK = "fake/gen/3?fail_rate=0.3"
WELL = "fake/gen/4"
DOCS = Path(__file__).resolve().parent.parent / "docs"
_conversations = itertools.count()


class Receiver:
    """A webhook receiver: a real HTTP server collecting the JSON bodies it is sent."""

    def __init__(self) -> None:
        events: list[dict[str, Any]] = []
        self.events = events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                events.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, event: str, timeout: float = 30.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if e["event"] == event and all(e.get(k) == v for k, v in match.items()):
                    return e
            time.sleep(0.05)
        raise AssertionError(f"no {event} {match} webhook; got {self.events}")

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]


@pytest.fixture(scope="module")
def own_fake(workdir: Path) -> Iterator[FakeUpstream]:
    upstream = start_fake(workdir)
    yield upstream
    upstream.proc.stop()


@pytest.fixture(scope="module")
def hook() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture(scope="module")
def healthgw(workdir: Path, own_fake: FakeUpstream, hook: Receiver) -> Iterator[Gateway]:
    config = gateway_config(
        own_fake,
        models=[{"name": "pair30", "deployments": [SICK, WELL]}],
        retries={
            "backoff_base": 0.01,
            "breaker_failures": 3,
            "breaker_window": 120,
            "breaker_cooldown": 4,
        },
        probes={"interval": 0.5, "keyed": True},
        webhook_url=hook.url,
        usage={"flush_interval": 0.1},
    )
    gateway = start_gateway(workdir, config)
    yield gateway
    gateway.proc.stop()


@pytest.fixture(scope="module")
def uptimegw(workdir: Path, own_fake: FakeUpstream, hook: Receiver) -> Iterator[Gateway]:
    config = gateway_config(
        own_fake,
        master_key=MASTER,
        models=[
            {"name": "uptime95", "deployments": ["fake/gen/2?fail_rate=0.05"]},
            {"name": "steady", "deployments": ["fake/gen/6?ttft=0.05"]},
        ],
        retries={"max_attempts": 1},
        # gen/5 answers 5 output tokens: $0.30 a request against a $1 budget
        prices={"gen/5": {"input": 0, "output": 60_000}},
        webhook_url=hook.url,
        usage={"flush_interval": 0.1},
    )
    gateway = start_gateway(workdir, config)
    yield gateway
    gateway.proc.stop()


def chat(gw: Gateway, model: str, key: str | None = None, stream: bool = False) -> httpx.Response:
    # a new conversation each time: affinity would keep one conversation on one deployment
    content = f"x {next(_conversations)}"
    body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": stream}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{gw.base_url}/chat/completions", json=body, headers=headers, timeout=30)


def status_of(gw: Gateway, model: str) -> dict[str, Any]:
    reply = httpx.get(f"{gw.url}/status.json", timeout=10)
    assert reply.status_code == 200, reply.text
    return next(m for m in reply.json()["models"] if m["model"] == model)


def test_a_deployment_failing_30_percent_is_taken_out_and_probed_back(
    healthgw: Gateway, own_fake: FakeUpstream, hook: Receiver
) -> None:
    served: list[str] = []
    for _ in range(200):
        response = chat(healthgw, "pair30")
        assert response.status_code == 200, "a retry or the healthy deployment answers"
        served.append(response.headers["x-tokenrelay-deployment"])
        if hook.named("channel_out"):
            break
    out = hook.wait("channel_out", deployment=SICK)
    assert "within 120s" in out["reason"], "the rule is a count within a window"
    # fail_rate=0.3 never fails twice in a row: a consecutive-failures breaker of 3
    # would never have opened.
    assert served.count(SICK) >= 3
    assert {d["name"]: d["state"] for d in status_of(healthgw, "pair30")["deployments"]} == {
        SICK: "out",
        WELL: "in",
    }
    taken_out = time.monotonic()
    after = []
    for _ in range(10):
        response = chat(healthgw, "pair30")
        if time.monotonic() - taken_out < 3.5:  # before its cooldown (4 s) ends
            after.append(response.headers["x-tokenrelay-deployment"])
            assert response.headers["x-tokenrelay-attempts"] == "1"
    assert after and set(after) == {WELL}, "traffic moved to the healthy deployment"

    httpx.post(f"{own_fake.base_url}/_fake/heal", timeout=5).raise_for_status()
    back = hook.wait("channel_back", timeout=60, deployment=SICK)
    assert "test request succeeded" in back["reason"]
    assert status_of(healthgw, "pair30")["deployments"][0]["state"] == "in"
    probes = [
        r
        for r in rows(healthgw.config["database_url"])
        if r["request_id"].startswith("probe-") and r["deployment"] == SICK
    ]
    assert probes and probes[-1]["outcome"] == "ok" and probes[-1]["key_id"] is None
    assert all(r["cost_usd"] is None for r in probes), "a probe is never billed"
    again = {chat(healthgw, "pair30").headers["x-tokenrelay-deployment"] for _ in range(30)}
    assert SICK in again, "back in, it takes traffic again"


def wait_figures(gw: Gateway, model: str, requests: int) -> dict[str, Any]:
    deadline = time.monotonic() + 40
    while True:
        entry = status_of(gw, model)
        figures = entry["figures"]
        if figures is not None and figures["requests"]["1h"] >= requests:
            return entry
        if time.monotonic() > deadline:
            raise AssertionError(f"figures of {model} never reached {requests}: {entry}")
        time.sleep(0.5)


def test_uptime_equals_what_was_injected(uptimegw: Gateway, own_fake: FakeUpstream) -> None:
    httpx.post(f"{own_fake.base_url}/_fake/break", timeout=5).raise_for_status()
    with ThreadPoolExecutor(8) as pool:  # the order does not matter: 10 of any 200 fail
        codes = list(pool.map(lambda _: chat(uptimegw, "uptime95", MASTER).status_code, range(200)))
    assert codes.count(200) == 190 and codes.count(500) == 10
    for _ in range(20):
        assert chat(uptimegw, "steady", MASTER, stream=True).status_code == 200
    entry = wait_figures(uptimegw, "uptime95", 200)
    f = entry["figures"]
    assert f["requests"]["1h"] == 200 and f["failures"]["1h"] == 10
    assert f["uptime"] == {"1h": 95.0, "24h": 95.0, "7d": 95.0, "30d": 95.0}
    assert f["errors"] == {"upstream": 10}, "500s: the upstream kind"
    assert f["bars"][-1] == 95.0 and f["bars"][0] is None
    steady = wait_figures(uptimegw, "steady", 20)["figures"]
    assert steady["uptime"]["24h"] == 100.0
    assert steady["ttft_p50_ms"] >= 50, "the fake waited 50 ms before its first token"
    assert steady["tokens_per_second"] > 0, "6 tokens over the stream's time"

    sdk = openai.OpenAI(base_url=uptimegw.base_url, api_key=MASTER, max_retries=0)
    listed = {m.id: m for m in sdk.models.list()}
    extra = listed["uptime95"].model_extra or {}
    assert extra["uptime"]["1h"] == 95.0
    assert set(extra["ttft_ms"]) == {"p50", "p95"}


def test_status_page_is_public_and_holds_no_secret(uptimegw: Gateway) -> None:
    page = httpx.get(f"{uptimegw.url}/status", timeout=10)
    assert page.status_code == 200 and "status.js" in page.text
    data = httpx.get(f"{uptimegw.url}/status.json", timeout=10).text
    assert MASTER not in data and "sk-upstream" not in data and "127.0.0.1" not in data


def test_budget_thresholds_reach_the_webhook(uptimegw: Gateway, hook: Receiver) -> None:
    reply = httpx.post(
        f"{uptimegw.url}/admin/keys",
        json={"name": "budgeted", "budget_usd": 1.0},
        headers={"Authorization": f"Bearer {MASTER}"},
        timeout=10,
    )
    assert reply.status_code == 201, reply.text
    key, key_id = reply.json()["secret"], reply.json()["key"]["id"]
    for i in range(4):
        assert chat(uptimegw, "fake/gen/5", key).status_code == 200
        if i == 1:
            time.sleep(0.5)
            assert not [e for e in hook.named("budget_80") if e["key_id"] == key_id]
    eighty = hook.wait("budget_80", key_id=key_id)
    full = hook.wait("budget_100", key_id=key_id)
    assert 0.8 <= eighty["spent_usd"] < 1.0 and full["spent_usd"] >= 1.0
    assert full["budget_usd"] == 1.0 and key not in json.dumps(hook.events)
    assert chat(uptimegw, "fake/gen/5", key).status_code == 429


def test_test_this_channel_answers_status_ttft_and_text(uptimegw: Gateway) -> None:
    reply = httpx.post(
        f"{uptimegw.url}/admin/deployments/test",
        json={"deployment": "fake/gen/6?ttft=0.05"},
        headers={"Authorization": f"Bearer {MASTER}"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["ok"] and result["status"] == 200
    assert result["ttft_ms"] >= 50 and result["answer"].startswith("tok0")
    denied = httpx.post(
        f"{uptimegw.url}/admin/deployments/test", json={"deployment": "local/echo"}, timeout=10
    )
    assert denied.status_code == 401


def test_a_disabled_upstream_key_reaches_the_webhook(
    workdir: Path, own_fake: FakeUpstream, hook: Receiver
) -> None:
    revoked, good = "uk-gone-401-0000hk01", "uk-good-0000hk02"
    config: dict[str, Any] = {
        "env_providers": False,
        "webhook_url": hook.url,
        "providers": [
            {
                "name": "twokeys",
                "base_url": f"{own_fake.base_url}/v1",
                "api_keys": [revoked, good],
                "models": ["*"],
            }
        ],
    }
    gw = start_gateway(workdir, config)
    try:
        for _ in range(4):  # round robin: the revoked key is met within two requests
            assert chat(gw, "twokeys/gen/2").status_code == 200, "the other key serves"
        event = hook.wait("key_disabled", channel="twokeys")
        assert event["key_id"] == key_id("twokeys", revoked) and event["status"] == 401
        assert event["at"].endswith("Z") and revoked not in json.dumps(hook.events)
    finally:
        gw.proc.stop()


def test_a_live_channel_is_watched_too(
    workdir: Path, own_fake: FakeUpstream, hook: Receiver
) -> None:
    """A channel made through the admin API after the start is served by a router built
    then: its deployment's health moves and its keys' disables reach the webhook too."""
    config = gateway_config(
        own_fake,
        master_key=MASTER,
        webhook_url=hook.url,
        retries={"max_attempts": 1, "breaker_failures": 2, "breaker_cooldown": 60},
    )
    gw = start_gateway(workdir, config, {"TOKENRELAY_SECRET_KEY": "health-test-secret"})
    admin = {"Authorization": f"Bearer {MASTER}"}
    try:
        body = {
            "name": "livech",
            "base_url": f"{own_fake.base_url}/v1",
            "api_keys": ["lv-gone-401-0000lv01", "lv-good-0000lv02"],
        }
        made = httpx.post(f"{gw.url}/admin/channels", headers=admin, json=body, timeout=10)
        assert made.status_code == 201, made.text
        for _ in range(2):
            assert chat(gw, "livech/gen/2", MASTER).status_code == 200, "the good key serves"
        disabled = hook.wait("key_disabled", channel="livech")
        assert disabled["status"] == 401 and "lv-gone" not in json.dumps(hook.events)
        for _ in range(2):
            assert chat(gw, "livech/gen/2?status=503", MASTER).status_code == 503
        out = hook.wait("channel_out", deployment="livech/gen/2?status=503")
        assert "2 failures within" in out["reason"]
    finally:
        gw.proc.stop()


def test_status_page_in_chromium(uptimegw: Gateway, own_fake: FakeUpstream) -> None:
    wait_figures(uptimegw, "uptime95", 200)
    with chromium() as browser:
        for scheme in ("light", "dark"):
            page = browser.new_page(color_scheme=scheme, viewport={"width": 1000, "height": 760})
            page.goto(f"{uptimegw.url}/status")
            page.wait_for_selector("body[data-loaded='true']")
            card = page.locator("li.status-model[data-model='uptime95']")
            assert card.locator("b[data-window='1h']").inner_text() == "95.0%"
            assert card.locator(".status-bar.fair").count() == 1, "today's bar: 95 %"
            assert "upstream 10" in card.inner_text()
            steady = page.locator("li.status-model[data-model='steady']")
            assert steady.locator("b[data-window='24h']").inner_text() == "100%"
            if (
                os.environ.get("UPDATE_SCREENSHOTS") == "1"
                or not (DOCS / f"status-{scheme}.png").exists()
            ):
                page.screenshot(path=str(DOCS / f"status-{scheme}.png"), full_page=True)
            page.close()


def test_test_this_channel_in_the_admin_page(uptimegw: Gateway) -> None:
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(f"{uptimegw.url}/admin")
        page.wait_for_selector("#master-key", state="visible")
        page.fill("#master-key", MASTER)
        page.click("#key-form button[type=submit]")
        row = page.locator("#deployments li[data-deployment='fake/gen/6?ttft=0.05']")
        row.wait_for()
        assert row.locator(".deployment-state").inner_text() == "in"
        row.locator("button.deployment-test").click()
        result = row.locator(".deployment-result.ok")
        result.wait_for(timeout=30_000)
        text = result.inner_text()
        assert "OK · HTTP 200 · TTFT" in text and "tok0" in text
        ttft = int(text.split("TTFT ")[1].split(" ms")[0])
        assert ttft >= 50, "the fake waits 50 ms before its first token"
        shot = DOCS / "admin-deployments.png"
        if os.environ.get("UPDATE_SCREENSHOTS") == "1" or not shot.exists():
            page.locator("section[aria-labelledby=deployments-title]").screenshot(path=str(shot))
        page.close()
