"""Streams shared through a real Redis: a stream produced by one gateway process is
resumed, followed and stopped through another; a producer killed mid-stream gives its
readers the frames kept and then a clear error, never a hang."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway
from support.services import shared_redis

from tokenrelay.sse import SSEDecoder

WORDS = " ".join(f"w{i}" for i in range(60))
BODY = {"model": "local/echo", "stream": True, "messages": [{"role": "user", "content": WORDS}]}

# These clients resume (as tokenrelay's SDKs): ids on their frames, and the grace.
RESUMES = {"X-Tokenrelay-Resume": "1"}


def pair_config(fake: FakeUpstream, redis_url: str, grace: float) -> dict[str, Any]:
    return gateway_config(
        fake,
        local={"rate": 40},
        redis_url=redis_url,
        keepalive_interval=0.2,
        streams={"grace": grace, "retention": 60},
    )


@pytest.fixture(scope="module")
def replicas(workdir: Path, fake: FakeUpstream) -> Iterator[tuple[Gateway, Gateway]]:
    redis = shared_redis()
    a = start_gateway(workdir, pair_config(fake, redis.url, grace=1.0))
    b = start_gateway(workdir, pair_config(fake, redis.url, grace=1.0))
    yield a, b
    a.proc.stop()
    b.proc.stop()


def frames_of(response: httpx.Response, limit: int | None = None) -> list[tuple[str | None, Any]]:
    decoder = SSEDecoder()
    out: list[tuple[str | None, Any]] = []
    for chunk in response.iter_raw():
        for event in decoder.feed(chunk):
            out.append((event.id, event.data if event.data == "[DONE]" else json.loads(event.data)))
            if limit is not None and len(out) >= limit:
                return out
    return out


def text_of(frames: list[tuple[str | None, Any]]) -> str:
    return "".join(
        p["choices"][0]["delta"].get("content") or ""
        for _, p in frames
        if isinstance(p, dict) and p.get("choices")
    )


def start_on(
    gw: Gateway, body: dict[str, Any], keep: int
) -> tuple[str, list[tuple[str | None, Any]]]:
    with httpx.stream(
        "POST", f"{gw.base_url}/chat/completions", json=body, headers=RESUMES, timeout=10
    ) as r:
        return r.headers["x-stream-id"], frames_of(r, keep)


def test_a_stream_from_one_replica_resumes_through_another(
    replicas: tuple[Gateway, Gateway],
) -> None:
    a, b = replicas
    stream_id, first = start_on(a, BODY, 4)
    headers = {"Last-Event-ID": str(first[-1][0])}
    with httpx.stream("GET", f"{b.base_url}/streams/{stream_id}", headers=headers, timeout=20) as r:
        assert r.status_code == 200
        rest = frames_of(r)
    frames = first + rest
    seqs = [int(str(i).rpartition(":")[2]) for i, _ in frames]
    assert seqs == list(range(1, len(frames) + 1)), "no gap, no duplicate across replicas"
    assert frames[-1][1] == "[DONE]"
    assert text_of(frames) == WORDS


def test_a_remote_reader_keeps_the_stream_alive_past_the_grace(
    replicas: tuple[Gateway, Gateway],
) -> None:
    """Grace is 1 s on the producer; the reader on the other replica takes ~1.5 s."""
    a, b = replicas
    stream_id, first = start_on(a, BODY, 2)
    with httpx.stream("GET", f"{b.base_url}/streams/{stream_id}?after=2", timeout=20) as r:
        rest = frames_of(r)
    assert rest[-1][1] == "[DONE]"
    assert text_of(first + rest) == WORDS


def test_stop_through_another_replica(
    replicas: tuple[Gateway, Gateway], fake: FakeUpstream
) -> None:
    a, b = replicas
    model = f"fake/gen/400?gap=0.05&ttft=0.00{time.monotonic_ns() % 10**6:06d}"
    body = {**BODY, "model": model}
    with httpx.stream("POST", f"{a.base_url}/chat/completions", json=body, timeout=20) as r:
        stream_id = r.headers["x-stream-id"]
        decoder = SSEDecoder()
        seen: list[str] = []
        for chunk in r.iter_raw():
            seen += [e.data for e in decoder.feed(chunk)]
            if len(seen) >= 3 and "stopped" not in locals():
                stopped = time.time()
                reply = httpx.post(f"{b.base_url}/streams/{stream_id}/cancel", timeout=5)
                assert reply.json()["status"] == "cancelled"
    assert seen[-1] == "[DONE]"
    entry = fake.find(model.removeprefix("fake/"))
    assert entry["client_closed"] and entry["ended"] - stopped < 1.0


def test_a_killed_producer_gives_an_error_not_a_hang(workdir: Path, fake: FakeUpstream) -> None:
    redis = shared_redis()
    a = start_gateway(workdir, pair_config(fake, redis.url, grace=30))
    b = start_gateway(workdir, pair_config(fake, redis.url, grace=30))
    try:
        slow = {**BODY, "messages": [{"role": "user", "content": " ".join(["x"] * 2000)}]}
        stream_id, _ = start_on(a, slow, 3)
        time.sleep(0.3)  # let a few more frames be mirrored
        a.proc.popen.send_signal(signal.SIGKILL)
        a.proc.popen.wait(5)
        started = time.monotonic()
        with httpx.stream("GET", f"{b.base_url}/streams/{stream_id}?after=3", timeout=30) as r:
            rest = frames_of(r)
        assert time.monotonic() - started < 15
        data = [p for _, p in rest if p not in (None,)]
        assert data[-1]["error"]["code"] == "stream_interrupted"
        kept = [p for p in data[:-1] if isinstance(p, dict) and p.get("choices")]
        assert kept, "the frames mirrored before the crash are delivered first"
    finally:
        a.proc.stop()
        b.proc.stop()


def test_anthropic_streams_resume_in_their_own_protocol(replicas: tuple[Gateway, Gateway]) -> None:
    a, b = replicas
    body = {
        "model": "local/echo",
        "max_tokens": 500,
        "stream": True,
        "messages": [{"role": "user", "content": WORDS}],
    }
    with httpx.stream("POST", f"{a.url}/v1/messages", json=body, headers=RESUMES, timeout=10) as r:
        stream_id = r.headers["x-stream-id"]
        decoder = SSEDecoder()
        first = []
        for chunk in r.iter_raw():
            first += decoder.feed(chunk)
            if len(first) >= 4:
                break
    with httpx.stream(
        "GET",
        f"{b.url}/anthropic/v1/streams/{stream_id}",
        headers={"Last-Event-ID": str(first[3].id)},
    ) as r:
        rest = list(SSEDecoder().iter(r.iter_raw()))
    events = [e.event for e in first[:4] + rest]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    text = "".join(
        json.loads(e.data)["delta"].get("text", "")
        for e in first[:4] + rest
        if e.event == "content_block_delta"
    )
    assert text == WORDS
