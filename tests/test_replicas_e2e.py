"""Two gateway processes on one real Redis, at the default keep-alive (5 s, the same as
redis-py's socket timeout): a stream produced on A and read through B stays open through
long pauses with pings and ends properly; a frame a client has seen on A is resumable on
B even before Redis has it; a killed A gives B's reader an error frame; B's resumes are
counted in A's usage record; a revoke reaches every replica at once."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway
from support.services import Redis, start_redis

from tokenrelay.sse import SSEDecoder

WORDS = " ".join(f"w{i}" for i in range(400))
BODY = {"model": "local/echo", "stream": True, "messages": [{"role": "user", "content": WORDS}]}
SRC = Path(__file__).resolve().parents[1] / "src"
# these clients resume: they declare it, so their frames carry ids
RESUMES = {"X-Tokenrelay-Resume": "1"}


@pytest.fixture
def own_redis() -> Iterator[Redis]:
    """A Redis of this test's own: some tests pause its writes."""
    server = start_redis()
    yield server
    server.destroy()


def pair(workdir: Path, fake: FakeUpstream, url: str, **overrides: Any) -> tuple[Gateway, Gateway]:
    config = gateway_config(
        fake, local={"rate": 40}, redis_url=url, streams={"grace": 30, "retention": 60}
    )
    config.update(overrides)  # keepalive_interval stays at its default, 5 s
    a = start_gateway(workdir, config)
    try:
        return a, start_gateway(workdir, config)
    except RuntimeError:  # B did not start: A must not outlive the test
        a.proc.stop()
        raise


def events_of(response: httpx.Response, limit: int | None = None) -> list[tuple[str, Any]]:
    """(kind, value) per SSE item: ("ping", None) for a comment, else (id, payload)."""
    decoder = SSEDecoder()
    out: list[tuple[str, Any]] = []
    for chunk in response.iter_raw():
        comments = decoder.comments
        events = decoder.feed(chunk)
        out += [("ping", None)] * (decoder.comments - comments)
        for event in events:
            data = event.data if event.data == "[DONE]" else json.loads(event.data)
            out.append((str(event.id), data))
            if limit is not None and len([k for k, _ in out if k != "ping"]) >= limit:
                return out
    return out


def seq(event_id: str) -> int:
    return int(event_id.rpartition(":")[2])


def text_of(frames: list[tuple[str, Any]]) -> str:
    return "".join(
        p["choices"][0]["delta"].get("content") or ""
        for _, p in frames
        if isinstance(p, dict) and p.get("choices")
    )


def test_a_long_pause_read_through_b_gets_pings_and_a_proper_end(
    workdir: Path, fake: FakeUpstream, own_redis: Redis
) -> None:
    """The first token is 6.5 s away (past redis-py's 5 s socket timeout): B's reader
    gets ': ping' comments, every frame, [DONE], and a properly ended response."""
    a, b = pair(workdir, fake, own_redis.url)
    try:
        model = "fake/gen/3?ttft=6.5"
        body = {**BODY, "model": model}
        with httpx.stream(
            "POST", f"{a.base_url}/chat/completions", json=body, headers=RESUMES, timeout=30
        ) as held:
            stream_id = held.headers["x-stream-id"]
            with httpx.stream("GET", f"{b.base_url}/streams/{stream_id}", timeout=30) as r:
                assert r.status_code == 200
                got = events_of(r)  # raises on a cut (incomplete chunked read)
        assert ("ping", None) in got[: got.index(next(e for e in got if e[0] != "ping"))]
        frames = [e for e in got if e[0] != "ping"]
        assert frames[-1][1] == "[DONE]"
        assert [seq(i) for i, _ in frames] == list(range(1, len(frames) + 1))
        assert text_of(frames) == "tok0 tok1 tok2 "
        # the finished stream, resumed mid-way through B, ends at once and cleanly
        started = time.monotonic()
        headers = {"Last-Event-ID": frames[1][0]}
        with httpx.stream(
            "GET", f"{b.base_url}/streams/{stream_id}", headers=headers, timeout=30
        ) as r:
            rest = [e for e in events_of(r) if e[0] != "ping"]
        assert rest == frames[2:]
        assert time.monotonic() - started < 4.5, "no wait for a block that cannot return"
    finally:
        a.proc.stop()
        b.proc.stop()


def test_a_frame_seen_on_a_is_resumable_on_b_before_redis_has_it(
    workdir: Path, fake: FakeUpstream, own_redis: Redis
) -> None:
    """Redis's writes paused: the client reads frames from A that Redis does not hold
    yet, and resumes after the last of them on B: B waits for them, never 400."""
    a, b = pair(workdir, fake, own_redis.url)
    control = redis.Redis.from_url(own_redis.url)
    try:
        with httpx.stream(
            "POST", f"{a.base_url}/chat/completions", json=BODY, headers=RESUMES, timeout=30
        ) as r:
            stream_id = r.headers["x-stream-id"]
            decoder = SSEDecoder()
            seen: list[tuple[str, Any]] = []
            for chunk in r.iter_raw():
                for event in decoder.feed(chunk):
                    seen.append((str(event.id), json.loads(event.data)))
                if len(seen) == 3:
                    control.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
                if len(seen) >= 8:
                    break
        with httpx.stream(
            "GET",
            f"{b.base_url}/streams/{stream_id}",
            headers={"Last-Event-ID": seen[-1][0]},
            timeout=60,
        ) as resumed:
            assert resumed.status_code == 200, resumed.read()
            rest = [e for e in events_of(resumed) if e[0] != "ping"]
        # an error frame has no id: it would show as the last frame's id twice
        errors = [p for _, p in rest if isinstance(p, dict) and "error" in p]
        assert not errors, errors
        frames = seen + rest
        assert [seq(i) for i, _ in frames] == list(range(1, len(frames) + 1))
        assert frames[-1][1] == "[DONE]"
        assert text_of(frames) == WORDS
    finally:
        control.close()
        a.proc.stop()
        b.proc.stop()


def test_a_killed_producer_gives_b_an_error_frame(
    workdir: Path, fake: FakeUpstream, own_redis: Redis
) -> None:
    """A is killed (SIGKILL) while frames the client saw have not reached Redis: B's
    reader gets 200 and a stream_interrupted error frame, not a 400, a hang or a cut."""
    a, b = pair(workdir, fake, own_redis.url)
    control = redis.Redis.from_url(own_redis.url)
    try:
        with httpx.stream(
            "POST", f"{a.base_url}/chat/completions", json=BODY, headers=RESUMES, timeout=30
        ) as r:
            stream_id = r.headers["x-stream-id"]
            decoder = SSEDecoder()
            seen: list[str] = []
            for chunk in r.iter_raw():
                seen += [str(e.id) for e in decoder.feed(chunk)]
                if len(seen) == 3:
                    control.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
                if len(seen) >= 6:
                    break
            a.proc.popen.send_signal(signal.SIGKILL)
            a.proc.popen.wait(5)
        for last in (seen[-1], seen[0]):  # after a frame Redis may lack, and one it has
            started = time.monotonic()
            with httpx.stream(
                "GET",
                f"{b.base_url}/streams/{stream_id}",
                headers={"Last-Event-ID": last},
                timeout=60,
            ) as resumed:
                assert resumed.status_code == 200, resumed.read()
                rest = [e for e in events_of(resumed) if e[0] != "ping"]
            assert time.monotonic() - started < 30
            assert rest, "an error frame, not a silent end"
            assert rest[-1][1]["error"]["code"] == "stream_interrupted"
            assert [seq(i) for i, _ in rest[:-1]] == list(
                range(seq(last) + 1, len(rest) + seq(last))
            )
    finally:
        control.close()
        a.proc.stop()
        b.proc.stop()


def test_resumes_through_b_are_counted_in_as_usage_record(
    workdir: Path, fake: FakeUpstream, own_redis: Redis
) -> None:
    a, b = pair(workdir, fake, own_redis.url)
    try:
        with httpx.stream(
            "POST", f"{a.base_url}/chat/completions", json=BODY, headers=RESUMES, timeout=30
        ) as r:
            stream_id = r.headers["x-stream-id"]
            request_id = r.headers["x-request-id"]
            first = events_of(r, 4)
        for n in (4, 6):
            with httpx.stream(
                "GET", f"{b.base_url}/streams/{stream_id}?after={n}", timeout=60
            ) as resumed:
                rest = events_of(resumed, 2 if n == 4 else None)
        assert rest[-1][1] == "[DONE]" and first
        db = a.config["database_url"].removeprefix("sqlite:///")
        deadline = time.monotonic() + 20
        rows: list[tuple[int]] = []
        while time.monotonic() < deadline and not rows:
            with sqlite3.connect(db) as conn:
                try:
                    rows = conn.execute(
                        "SELECT resumes FROM usage WHERE request_id = ?", (request_id,)
                    ).fetchall()
                except sqlite3.OperationalError:  # the table is being created
                    rows = []
            time.sleep(0.2)
        assert rows == [(2,)], "one record, with both resumes served by B"
    finally:
        a.proc.stop()
        b.proc.stop()


def cli(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tokenrelay.cli", *argv],
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_cli_revoke_applies_at_once_on_every_replica(
    workdir: Path, fake: FakeUpstream, own_redis: Redis, tmp_path: Path
) -> None:
    """The key lookups are cached for 300 s; a revoke by the CLI, or through one
    replica's admin API, still applies at once on both."""
    db = f"sqlite:///{tmp_path / 'keys.db'}"
    made = [
        json.loads(cli("keys", "create", "--name", name, "--json", "--database-url", db))
        for name in ("team", "other")
    ]
    (key_id, secret), (other_id, other) = [(m["key"]["id"], m["secret"]) for m in made]
    a, b = pair(
        workdir,
        fake,
        own_redis.url,
        database_url=db,
        master_key="tr-master-0123456789abcdef",
        auth_cache_ttl=300,
    )
    try:
        for key in (secret, other):  # now cached on both
            headers = {"Authorization": f"Bearer {key}"}
            for gw in (a, b):
                assert httpx.get(f"{gw.base_url}/models", headers=headers).status_code == 200
        cli("keys", "revoke", key_id, "--database-url", db, "--redis-url", own_redis.url)
        assert statuses_soon(a, b, secret) == [401, 401]
        for gw in (a, b):  # cached again (the revoke dropped every cached lookup)
            reply = httpx.get(f"{gw.base_url}/models", headers={"Authorization": f"Bearer {other}"})
            assert reply.status_code == 200
        master = {"Authorization": "Bearer tr-master-0123456789abcdef"}
        reply = httpx.post(f"{a.url}/admin/keys/{other_id}/revoke", headers=master)
        assert reply.status_code == 200
        assert statuses_soon(a, b, other) == [401, 401]
    finally:
        a.proc.stop()
        b.proc.stop()


def statuses_soon(a: Gateway, b: Gateway, secret: str) -> list[int]:
    """The statuses of a request with ``secret`` on a and b, once both are 401 or
    after 3 s (far below the 300 s the lookups are cached for)."""
    headers = {"Authorization": f"Bearer {secret}"}
    deadline = time.monotonic() + 3
    while True:
        statuses = [httpx.get(f"{g.base_url}/models", headers=headers).status_code for g in (a, b)]
        if statuses == [401, 401] or time.monotonic() > deadline:
            return statuses
        time.sleep(0.05)
