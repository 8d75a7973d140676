"""``tokenrelay serve --workers 2`` on one port, with a real Redis and a SQLite file, seen
from the client's side: streams are served by both workers (``X-Tokenrelay-Worker``),
a stream dropped on one worker is resumed through the other, one key's limit holds
across both, one scrape of ``/metrics`` sums both, each request has one usage row,
SIGTERM drains every worker, a killed worker is started again; and without Redis more
than one worker is refused."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway, tokenrelay
from support.services import shared_redis, start_redis

from tokenrelay.sse import SSEDecoder

MASTER = "master-" + "w" * 32
ADMIN = {"Authorization": f"Bearer {MASTER}"}
RESUMES = {"X-Tokenrelay-Resume": "1"}
WORKER = "x-tokenrelay-worker"
TRIES = 60  # new connections tried before concluding one worker takes them all


def body(words: int = 5) -> dict[str, Any]:
    text = " ".join(f"w{i}" for i in range(words))
    return {"model": "local/echo", "stream": True, "messages": [{"role": "user", "content": text}]}


def config(fake: FakeUpstream, workdir: Path, redis_url: str, **overrides: Any) -> dict[str, Any]:
    return gateway_config(
        fake,
        master_key=MASTER,
        redis_url=redis_url,
        database_url=f"sqlite:///{workdir}/workers-{time.monotonic_ns()}.db",
        local={"rate": 40},
        streams={"grace": 30, "retention": 60},
        usage={"flush_interval": 0.1},
        **overrides,
    )


@pytest.fixture(scope="module")
def two(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    gw = start_gateway(workdir, config(fake, workdir, shared_redis().url), args=["--workers", "2"])
    wait_for_workers(gw, {"1", "2"})
    yield gw
    gw.proc.stop()


def wait_for_workers(gw: Gateway, expected: set[str], timeout: float = 60) -> None:
    """Until ``/health`` has been answered by every worker in ``expected``."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while seen != expected:
        assert time.monotonic() < deadline, f"only workers {seen} answered"
        try:
            reply = httpx.get(f"{gw.url}/health", headers={"Connection": "close"}, timeout=5)
            seen.add(reply.json()["worker"])
        except httpx.TransportError:
            time.sleep(0.2)


def new_key(gw: Gateway, **spec: Any) -> str:
    reply = httpx.post(f"{gw.url}/admin/keys", json={"name": "w", **spec}, headers=ADMIN)
    assert reply.status_code == 201, reply.text
    return str(reply.json()["secret"])


def stream_once(gw: Gateway, key: str, words: int = 5) -> tuple[int, str | None, str, list[Any]]:
    """One stream on a new connection: status, worker, request id, payloads."""
    headers = {"Authorization": f"Bearer {key}", "Connection": "close"}
    with httpx.Client(timeout=30) as client:
        reply = client.post(f"{gw.base_url}/chat/completions", json=body(words), headers=headers)
    payloads = []
    if reply.status_code == 200:
        for event in SSEDecoder().iter([reply.content]):
            payloads.append(event.data if event.data == "[DONE]" else json.loads(event.data))
    return reply.status_code, reply.headers.get(WORKER), reply.headers["x-request-id"], payloads


def text_of(payloads: list[Any]) -> str:
    return "".join(
        p["choices"][0]["delta"].get("content") or ""
        for p in payloads
        if isinstance(p, dict) and p.get("choices")
    )


def requests_counted(gw: Gateway) -> float:
    """``tokenrelay_requests_total`` of local/echo, ok, in one scrape."""
    reply = httpx.get(f"{gw.url}/metrics", headers={**ADMIN, "Connection": "close"}, timeout=10)
    assert reply.status_code == 200, reply.text
    total = 0.0
    for line in reply.text.splitlines():
        labels = 'model="local/echo"' in line and 'outcome="ok"' in line
        if line.startswith("tokenrelay_requests_total{") and labels:
            total += float(line.rsplit(" ", 1)[1])
    return total


def usage_rows(gw: Gateway, request_ids: set[str], timeout: float = 20) -> list[dict[str, Any]]:
    path = str(gw.config["database_url"]).removeprefix("sqlite:///")
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(path) as db:
            db.row_factory = sqlite3.Row
            found = [
                dict(r) for r in db.execute("SELECT * FROM usage") if r["request_id"] in request_ids
            ]
        if {r["request_id"] for r in found} == request_ids or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_streams_through_both_workers_are_counted_once_each_in_metrics_and_usage(
    two: Gateway,
) -> None:
    key = new_key(two)
    before = requests_counted(two)
    served: dict[str, str] = {}
    for _ in range(TRIES):
        status, worker, request_id, payloads = stream_once(two, key)
        assert status == 200 and worker in {"1", "2"}
        assert payloads[-1] == "[DONE]" and text_of(payloads) == "w0 w1 w2 w3 w4"
        served[request_id] = worker
        if len(set(served.values())) == 2 and len(served) >= 6:
            break
    assert set(served.values()) == {"1", "2"}, "every stream went to one worker"
    # one scrape, whichever worker answers it, counts the streams of both
    deadline = time.monotonic() + 10
    while requests_counted(two) - before < len(served) and time.monotonic() < deadline:
        time.sleep(0.3)  # an access line and its counters follow the stream's last byte
    for _ in range(4):  # several scrapes, likely on both workers: the same sum
        assert requests_counted(two) - before == len(served)
    rows = usage_rows(two, set(served))
    assert sorted(r["request_id"] for r in rows) == sorted(served), "one row per request"
    assert all(r["output_tokens"] == 5 for r in rows)


def test_metrics_keep_their_rule_across_workers(two: Gateway) -> None:
    for _ in range(4):  # whichever worker answers
        reply = httpx.get(f"{two.url}/metrics", headers={"Connection": "close"}, timeout=10)
        assert reply.status_code == 401
        key = new_key(two)
        reply = httpx.get(f"{two.url}/metrics", headers={"Authorization": f"Bearer {key}"})
        assert reply.status_code == 401


def test_a_stream_dropped_on_one_worker_is_resumed_through_the_other(two: Gateway) -> None:
    key = new_key(two)
    auth = {"Authorization": f"Bearer {key}", **RESUMES}
    seen: list[tuple[str, Any]] = []
    with httpx.Client(timeout=30) as client:
        request = client.build_request(
            "POST", f"{two.base_url}/chat/completions", json=body(120), headers=auth
        )
        reply = client.send(request, stream=True)
        producer, stream_id = reply.headers[WORKER], reply.headers["x-stream-id"]
        decoder = SSEDecoder()
        for chunk in reply.iter_raw():
            seen += [(str(e.id), json.loads(e.data)) for e in decoder.feed(chunk)]
            if len(seen) >= 5:
                break
        reply.close()  # the connection drops; the stream goes on for the grace
    time.sleep(0.5)  # the frames seen are in Redis by now
    rest: list[tuple[str, Any]] = []
    headers = {**auth, "Last-Event-ID": seen[-1][0], "Connection": "close"}
    for _ in range(TRIES):  # a new connection each time, until the other worker takes one
        with httpx.Client(timeout=60) as client:
            url = f"{two.base_url}/streams/{stream_id}"
            with client.stream("GET", url, headers=headers) as resumed:
                assert resumed.status_code == 200
                if resumed.headers[WORKER] == producer:
                    continue
                decoder = SSEDecoder()
                for chunk in resumed.iter_raw():
                    for e in decoder.feed(chunk):
                        data = e.data if e.data == "[DONE]" else json.loads(e.data)
                        rest.append((str(e.id), data))
                break
    assert rest, "no GET landed on the other worker"
    frames = seen + rest
    ids = [int(i.rpartition(":")[2]) for i, _ in frames]
    assert ids == list(range(1, len(frames) + 1)), "no gap, no duplicate"
    assert frames[-1][1] == "[DONE]"
    assert text_of([p for _, p in frames]) == " ".join(f"w{i}" for i in range(120))


def test_one_key_s_limit_holds_across_workers(two: Gateway) -> None:
    """A key with rpm=6: one stream after another, each on a new connection, until one is
    refused: exactly 6 admitted, whichever worker took each; then all refused. Repeated
    with a new key until the 6 admitted were served by both workers."""
    for _ in range(8):
        key = new_key(two, rpm=6)
        admitted: list[str | None] = []
        while True:
            status, worker, _, _ = stream_once(two, key)
            if status != 200:
                break
            admitted.append(worker)
            assert len(admitted) <= 6, "the limit did not hold"
        assert status == 429 and len(admitted) == 6
        for _ in range(4):  # refused on any worker
            assert stream_once(two, key)[0] == 429
        if set(admitted) == {"1", "2"}:
            return
    pytest.fail("the admitted streams were never spread over both workers")


def test_eventsource_tokens_minted_on_either_worker_start_on_either(two: Gateway) -> None:
    """Tokens minted and used each on a new connection (so on either worker, as they
    come): every one starts its stream, once; the GETs were served by both workers."""
    key = new_key(two, models=["local/*"])
    auth = {"Authorization": f"Bearer {key}", "Connection": "close"}
    close = {"Connection": "close"}
    workers: set[str | None] = set()
    for i in range(12):
        prompt = {"model": "local/echo", "messages": [{"role": "user", "content": f"t{i}"}]}
        minted = httpx.post(f"{two.url}/v1/chat/stream", json=prompt, headers=auth, timeout=10)
        assert minted.status_code == 200, minted.text
        url = f"{two.url}{minted.json()['url']}"
        got = httpx.get(url, headers=close, timeout=30)
        assert got.status_code == 200, got.text
        workers.add(got.headers.get(WORKER))
        events = SSEDecoder().iter([got.content])
        payloads = [json.loads(e.data) for e in events if e.data != "[DONE]"]
        assert text_of(payloads) == f"t{i}"
        assert httpx.get(url, headers=close, timeout=10).status_code == 401  # used
    assert workers == {"1", "2"}


def test_sigterm_drains_every_worker_and_a_killed_worker_comes_back(
    workdir: Path, fake: FakeUpstream
) -> None:
    redis = start_redis()
    gw = start_gateway(
        workdir, config(fake, workdir, redis.url, shutdown_drain=20), args=["--workers", "2"]
    )
    try:
        wait_for_workers(gw, {"1", "2"})
        master = gw.proc.popen.pid
        children = Path(f"/proc/{master}/task/{master}/children")
        first = set(children.read_text().split())
        assert len(first) == 2
        victim = sorted(first)[0]
        subprocess.run(["kill", "-KILL", victim], check=True)
        deadline = time.monotonic() + 60
        while len(set(children.read_text().split()) - {victim}) < 2:
            assert time.monotonic() < deadline, "the killed worker was not started again"
            time.sleep(0.2)
        wait_for_workers(gw, {"1", "2"})
        key = new_key(gw)
        # a long stream on each worker, then SIGTERM: both finish within the drain
        got: dict[str, list[Any]] = {}
        lock = threading.Lock()
        started = threading.Event()

        def read(name: str) -> None:
            headers = {"Authorization": f"Bearer {key}", "Connection": "close"}
            with httpx.Client(timeout=60) as client:
                url = f"{gw.base_url}/chat/completions"
                with client.stream("POST", url, json=body(120), headers=headers) as reply:
                    worker = reply.headers[WORKER]
                    decoder = SSEDecoder()
                    payloads: list[Any] = []
                    for chunk in reply.iter_raw():
                        for e in decoder.feed(chunk):
                            payloads.append(e.data if e.data == "[DONE]" else json.loads(e.data))
                        started.set()
            with lock:
                got.setdefault(worker, []).append(payloads)

        readers = [threading.Thread(target=read, args=(str(i),)) for i in range(6)]
        for t in readers:
            t.start()
        assert started.wait(30)
        time.sleep(0.5)
        gw.proc.popen.send_signal(signal.SIGTERM)
        for t in readers:
            t.join(60)
        assert gw.proc.popen.wait(60) == 0
        assert sum(len(v) for v in got.values()) == 6
        for streams in got.values():
            for payloads in streams:
                assert payloads[-1] == "[DONE]", "a stream was cut, not drained"
                assert text_of(payloads) == " ".join(f"w{i}" for i in range(120))
        with pytest.raises(httpx.TransportError):  # nobody listens any more
            httpx.get(f"{gw.url}/health", timeout=5)
        assert not children.exists() or not children.read_text().split()
    finally:
        gw.proc.stop()
        redis.destroy()


def test_more_than_one_worker_without_redis_is_refused(workdir: Path) -> None:
    path = workdir / "no-redis.yaml"
    path.write_text(f"database_url: sqlite:///{workdir}/no-redis.db\n")
    done = subprocess.run(
        [*tokenrelay("serve", "--port", "1", "--config", str(path), "--workers", "2")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--workers 2 needs redis_url" in done.stderr
