"""A channel's own limits, from the user's side: real gateway processes, a fake upstream
of this module's own that counts requests per key (each channel has its own key), the
OpenAI SDK as the client.

A channel at its requests-per-minute limit is passed over for the model's other
deployment (no request fails, its health untouched); alone, the client gets 429 with
Retry-After. A channel at its concurrency limit refuses the request in excess at once
and takes requests again when one ends. Limits set in the config file, through the
admin API and through the CLI."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from support.procs import FakeUpstream, Gateway, start_fake, start_gateway

MASTER = "master-" + "l" * 32
ADMIN = {"Authorization": f"Bearer {MASTER}"}
SECRET_ENV = {"TOKENRELAY_SECRET_KEY": "limits-test-secret"}
SRC = Path(__file__).resolve().parents[1] / "src"
CAPPED, SPARE = "lm-key-0000capd", "lm-key-0000spar"


@pytest.fixture(scope="module")
def own_fake(workdir: Path) -> Iterator[FakeUpstream]:
    upstream = start_fake(workdir)  # its own: the per-key counts are this module's
    yield upstream
    upstream.proc.stop()


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=MASTER, max_retries=0)


def ask(gw: Gateway, model: str, content: str = "x") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    return httpx.post(f"{gw.base_url}/chat/completions", json=body, headers=ADMIN, timeout=30)


def test_a_channel_at_its_rpm_is_passed_over_then_refused(
    workdir: Path, own_fake: FakeUpstream
) -> None:
    def provider(name: str, key: str, **more: Any) -> dict[str, Any]:
        url = f"{own_fake.base_url}/v1"
        return {"name": name, "base_url": url, "api_key": key, "models": ["gen/2"], **more}

    config = {
        "env_providers": False,
        "master_key": MASTER,
        "providers": [
            provider("capped", CAPPED, weight=1000, limits={"rpm": 5}),  # chosen first
            provider("spare", SPARE),
        ],
    }
    gw = start_gateway(workdir, config)
    try:
        own_fake.clear()
        for i in range(20):
            response = ask(gw, "gen/2", f"turn {i}")
            assert response.status_code == 200, response.text
            assert response.headers["x-tokenrelay-attempts"] == "1", "a limit is no attempt"
        counts = own_fake.per_key()
        assert counts == {"…capd": 5, "…spar": 15}, "5 a minute on the capped channel"
        status = httpx.get(f"{gw.url}/status.json", timeout=10).json()
        states = {d["name"]: d["state"] for m in status["models"] for d in m["deployments"]}
        assert states["capped/gen/2"] == "in", "being at its limit is not a failure"

        with pytest.raises(openai.RateLimitError) as caught:  # alone: refused
            client(gw).chat.completions.create(
                model="capped/gen/2", messages=[{"role": "user", "content": "x"}]
            )
        error = caught.value
        assert error.code == "channel_rate_limited" and "capped" in error.message
        assert "5 requests per minute" in error.message
        assert int(error.response.headers["retry-after"]) >= 1
        assert own_fake.per_key()["…capd"] == 5, "nothing more reached it"
    finally:
        gw.proc.stop()


def cli(*argv: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tokenrelay.cli", *argv],
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", **SECRET_ENV},
    )
    assert done.returncode == 0, done.stderr


def test_database_channel_limits_through_the_admin_api_and_the_cli(
    workdir: Path, own_fake: FakeUpstream
) -> None:
    gw = start_gateway(workdir, {"env_providers": False, "master_key": MASTER}, SECRET_ENV)
    try:
        body = {
            "name": "one",
            "base_url": f"{own_fake.base_url}/v1",
            "limits": {"max_concurrent": 1},
        }
        reply = httpx.post(f"{gw.url}/admin/channels", headers=ADMIN, json=body, timeout=10)
        assert reply.status_code == 201 and reply.json()["limits"] == {"max_concurrent": 1}
        bad = {"limits": {"rpm": 0}}
        refused = httpx.patch(f"{gw.url}/admin/channels/one", headers=ADMIN, json=bad, timeout=10)
        assert refused.status_code == 400 and "limits.rpm" in refused.text

        slow: list[int] = []
        first = threading.Thread(
            target=lambda: slow.append(ask(gw, "one/gen/2?ttft=6").status_code)
        )
        first.start()
        deadline = time.monotonic() + 10
        while not own_fake.log() and time.monotonic() < deadline:  # the slow one is upstream
            time.sleep(0.05)
        second = ask(gw, "one/gen/2")
        assert second.status_code == 429, second.text
        assert second.json()["error"]["code"] == "channel_rate_limited"
        assert "1 concurrent requests" in second.json()["error"]["message"]
        assert first.is_alive() and not slow, "refused at once, not after the slow one"
        first.join(30)
        assert slow == [200]
        assert ask(gw, "one/gen/2").status_code == 200, "its slot came back"

        cli(
            "channels",
            "edit",
            "one",
            "--limit",
            "rpm=1",
            "--database-url",
            gw.config["database_url"],
        )
        deadline = time.monotonic() + 15  # heard by polling (the listing reads the database)
        while (code := ask(gw, "one/gen/2").status_code) == 200:
            assert time.monotonic() < deadline, "the rpm limit never applied"
            time.sleep(0.2)
        assert code == 429 and ask(gw, "one/gen/2").status_code == 429, "one a minute"
        listed = httpx.get(f"{gw.url}/admin/channels/one", headers=ADMIN, timeout=10).json()
        assert listed["limits"] == {"rpm": 1}
    finally:
        gw.proc.stop()
