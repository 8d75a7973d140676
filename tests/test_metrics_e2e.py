"""``/metrics`` from outside: bounded by what the gateway serves (not by what clients
send), cheap to scrape while streams run, and readable only by the operator."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from support.net import free_port
from support.procs import (
    FakeUpstream,
    Gateway,
    gateway_config,
    start_gateway,
    start_process,
    tokenrelay,
)

MASTER = "master-" + "q" * 32
TOKEN = "scrape-" + "t" * 32


@pytest.fixture(scope="module")
def gw(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    gateway = start_gateway(workdir, gateway_config(fake, local={"rate": 100}))
    yield gateway
    gateway.proc.stop()


def scrape(gw: Gateway) -> str:
    response = httpx.get(f"{gw.url}/metrics", timeout=30)
    assert response.status_code == 200
    return response.text


def send(client: httpx.Client, url: str, model: str) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "x"}]}
    return client.post(url, json=body, timeout=30).status_code


def test_random_model_names_go_to_one_bucket(gw: Gateway) -> None:
    """4,000 model names no one configured: 3,000 unknown ones (404) and 1,000 passed
    through a "*" provider. /metrics does not grow with them, and names none of them."""
    url = f"{gw.base_url}/chat/completions"
    names = [f"nope-{uuid.uuid4().hex}" for _ in range(3000)]
    names += [f"fake/gen/1?ttft=0.0000{i:05d}" for i in range(1000)]
    with httpx.Client() as client:  # one of each first: the buckets exist
        assert send(client, url, "nope-warm") == 404
        assert send(client, url, "fake/gen/1?ttft=0.00001") == 200
    before = scrape(gw)

    def run(chunk: list[str]) -> list[int]:
        with httpx.Client() as client:
            return [send(client, url, m) for m in chunk]

    with ThreadPoolExecutor(4) as pool:
        statuses = [s for part in pool.map(run, [names[i::4] for i in range(4)]) for s in part]
    assert statuses.count(404) == 3000 and statuses.count(200) == 1000
    after = scrape(gw)
    assert len(after) < len(before) + 4096, (len(before), len(after))
    assert "nope-" not in after and "ttft=" not in after
    assert 'model="other"' in after and 'deployment="fake/*"' in after
    assert 'model="local/echo"' in after or "local/echo" not in before


def test_a_scrape_does_not_stall_a_live_stream(gw: Gateway) -> None:
    """A stream of 300 words at 100 words/s read while /metrics is scraped over and
    over: no pause near what a slow render on the event loop caused (seconds)."""
    words = " ".join(f"w{i}" for i in range(300))
    body = {"model": "local/echo", "stream": True, "messages": [{"role": "user", "content": words}]}
    stop = threading.Event()

    def scraper() -> None:
        while not stop.is_set():
            scrape(gw)

    threads = [threading.Thread(target=scraper) for _ in range(2)]
    gaps: list[float] = []
    try:
        for t in threads:
            t.start()
        with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, timeout=30) as r:
            last = None
            for _ in r.iter_raw():
                now = time.monotonic()
                if last is not None:
                    gaps.append(now - last)
                last = now
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(gaps) > 20
    assert max(gaps) < 1.0, f"a pause of {max(gaps):.2f}s"


def test_metrics_need_the_master_key_or_the_scrape_token(workdir: Path, fake: FakeUpstream) -> None:
    gateway = start_gateway(workdir, gateway_config(fake, master_key=MASTER, metrics_token=TOKEN))
    try:
        url = f"{gateway.url}/metrics"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        for secret in (MASTER, TOKEN):
            ok = httpx.get(url, headers={"Authorization": f"Bearer {secret}"})
            assert ok.status_code == 200 and "tokenrelay_requests" in ok.text
        assert httpx.get(url, headers={"x-api-key": TOKEN}).status_code == 200
    finally:
        gateway.proc.stop()


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (None if it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: only a route is chosen
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_open_mode_serves_metrics_to_loopback_clients_only(workdir: Path) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    port = free_port()
    path = workdir / f"open-{port}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "env_providers": False,
                "database_url": f"sqlite:///{workdir}/open-{port}.db",
                "usage": {"spill_dir": str(workdir / f"spool-open-{port}")},
            }
        )
    )
    args = tokenrelay("serve", "--host", "0.0.0.0", "--port", str(port), "--config", str(path))
    proc = start_process("gateway-open", [*args, "--insecure-no-auth"], port, workdir)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
        remote = httpx.get(f"http://{address}:{port}/metrics")
        assert remote.status_code == 403, remote.text
        assert "tokenrelay_" not in remote.text
        assert json.loads(remote.text)["error"]["message"]
    finally:
        proc.stop()
