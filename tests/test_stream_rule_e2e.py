"""The one rule of a client that leaves, and the wire it gets, seen from outside.

- A client that did not declare it resumes (the official SDKs, curl) gets the provider's
  wire (no ``id:``, no ``retry:``) and, when it leaves, its upstream is closed at once.
- A client that declared it (``X-Tokenrelay-Resume: 1``, as tokenrelay's SDKs send) gets
  ids, and its stream is read on for the grace; the GET route always gets ids + retry.
- While no upstream has answered, the client gets ``: ping``; a client that leaves then
  stops every further attempt.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from sqlalchemy import select
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway

from tokenrelay.fold import CHARS_PER_TOKEN
from tokenrelay.store import Store
from tokenrelay.store.schema import usage

RESUMES = {"X-Tokenrelay-Resume": "1"}
GRACE = 30.0  # far above every guard below: a close within them was not the grace


def unique() -> str:
    return f"{time.monotonic_ns()}"


@pytest.fixture(scope="module")
def gw(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    config = gateway_config(
        fake,
        local={"rate": 100},
        keepalive_interval=0.5,
        streams={"grace": GRACE},
        usage={"flush_interval": 0.1},
        retries={"max_attempts": 4, "backoff_base": 0.01, "backoff_max": 0.02},
    )
    config["providers"][0]["timeouts"] = {"first_token": 2}
    gateway = start_gateway(workdir, config)
    yield gateway
    gateway.proc.stop()


def entry_when_ended(fake: FakeUpstream, model: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        entry = fake.find(model, timeout=5)
        if entry.get("ended") or time.monotonic() > deadline:
            return entry
        time.sleep(0.05)


def usage_row(gw: Gateway, request_id: str, timeout: float = 10) -> dict[str, Any]:
    async def read() -> list[dict[str, Any]]:
        store = await Store.open(gw.config["database_url"])
        try:
            async with store.engine.connect() as conn:
                result = await conn.execute(select(usage).where(usage.c.request_id == request_id))
                return [dict(r._mapping) for r in result]
        finally:
            await store.close()

    deadline = time.monotonic() + timeout
    while True:
        found = asyncio.run(read())
        if found or time.monotonic() > deadline:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.2)


# ---- point 6: stop means stop ---------------------------------------------------------


def test_openai_sdk_break_and_close_closes_the_upstream_at_once(
    gw: Gateway, fake: FakeUpstream
) -> None:
    """What every tutorial teaches: ``break``, then ``close()``. The upstream is closed
    at once (not read on for the grace) and the usage row counts what was streamed."""
    model = f"gen/2000?gap=0.01&ttft=0.{unique()}"
    client = openai.OpenAI(base_url=gw.base_url, api_key="k", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=f"fake/{model}", messages=[{"role": "user", "content": "x"}], stream=True
    )
    request_id = raw.headers["x-request-id"]
    stream = raw.parse()
    for i, _ in enumerate(stream):
        if i == 4:
            break
    stream.close()
    left_at = time.time()
    entry = entry_when_ended(fake, model)
    assert entry["client_closed"]
    assert entry["ended"] - left_at < GRACE / 3, "closed at once, not after the grace"
    assert entry["events_sent"] < 1000, "the upstream did not generate on for nobody"
    row = usage_row(gw, request_id)
    assert row["outcome"] == "cancelled"
    # the estimate is of the characters streamed (fold.CHARS_PER_TOKEN), so the bound is
    # the estimate of every text the fake sent ("tok0 ", "tok1 ", ...), not their count
    sent_chars = sum(len(f"tok{i} ") for i in range(entry["events_sent"]))
    assert 0 < row["output_tokens"] <= -(-sent_chars // CHARS_PER_TOKEN), "only what was sent"


def test_a_declared_resumer_keeps_its_stream_for_the_grace(gw: Gateway, fake: FakeUpstream) -> None:
    model = f"gen/300?gap=0.01&ttft=0.{unique()}"
    body = {
        "model": f"fake/{model}",
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    with httpx.stream(
        "POST", f"{gw.base_url}/chat/completions", json=body, headers=RESUMES, timeout=10
    ) as r:
        stream_id = r.headers["x-stream-id"]
        for _ in r.iter_raw():
            break
    time.sleep(1.0)
    entry = fake.find(model)
    assert not entry.get("client_closed"), "read on while its client may come back"
    with httpx.stream("GET", f"{gw.base_url}/streams/{stream_id}?after=0", timeout=20) as r:
        text = r.read().decode()
    assert text.count("tok") == 300 and "data: [DONE]" in text


# ---- point 7: the provider's wire to a plain client ------------------------------------


def lines_of(raw: bytes) -> list[str]:
    return raw.decode().split("\n")


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_a_plain_client_gets_no_id_and_no_retry_line(gw: Gateway, route: str) -> None:
    if route == "openai":
        url = f"{gw.base_url}/chat/completions"
        body: dict[str, Any] = {"model": "local/echo", "stream": True}
    else:
        url = f"{gw.url}/v1/messages"
        body = {"model": "local/echo", "stream": True, "max_tokens": 100}
    body["messages"] = [{"role": "user", "content": "one two three"}]
    plain = httpx.post(url, json=body, timeout=10)
    assert plain.status_code == 200 and "x-stream-id" in plain.headers
    lines = lines_of(plain.content)
    assert not [x for x in lines if x.startswith(("id:", "retry:"))]
    assert plain.content.startswith(b"data: " if route == "openai" else b"event: ")
    declared = httpx.post(url, json=body, headers=RESUMES, timeout=10)
    events = [e for e in declared.content.decode().split("\n\n") if e.strip()]
    assert events and all(e.startswith("id: st_") for e in events), "ids to a resumer"
    stream_id = declared.headers["x-stream-id"]
    prefix = "" if route == "openai" else "/anthropic"
    again = httpx.get(f"{gw.url}{prefix}/v1/streams/{stream_id}?after=1", timeout=10)
    assert again.content.startswith(b"retry: ") and b"\nid: st_" in again.content


def test_the_openai_and_anthropic_sdks_read_the_plain_wire(gw: Gateway) -> None:
    chunks = openai.OpenAI(base_url=gw.base_url, api_key="k").chat.completions.create(
        model="local/echo", messages=[{"role": "user", "content": "a b c"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "a b c"
    client = anthropic.Anthropic(base_url=gw.url, api_key="k")
    with client.messages.stream(
        model="local/echo", max_tokens=100, messages=[{"role": "user", "content": "a b c"}]
    ) as s:
        assert "".join(s.text_stream) == "a b c"


# ---- point 8: before the upstream's headers ---------------------------------------------


def raw_post(gw: Gateway, body: bytes, path: str = "/v1/chat/completions") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gw.proc.port), timeout=10)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)
    return sock


def read_until(sock: socket.socket, needle: bytes, timeout: float) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while needle not in got and time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        got += chunk
    return got


def requests_for(fake: FakeUpstream, model: str) -> int:
    return sum(1 for e in fake.log() if (e.get("body") or {}).get("model") == model)


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_gone_before_the_headers_stops_every_attempt(
    gw: Gateway, fake: FakeUpstream, stream: bool
) -> None:
    """An upstream that never answers: the streaming client gets ``: ping`` meanwhile;
    the client leaves; no further attempt is made (first_token is 2 s, 4 attempts)."""
    model = f"gen/5?head_after=3600&ttft=0.{unique()}"
    body = f'{{"model":"fake/{model}","stream":{str(stream).lower()},"messages":[{{"role":"user","content":"x"}}]}}'
    sock = raw_post(gw, body.encode())
    if stream:
        got = read_until(sock, b": ping", 10)
        assert got.startswith(b"HTTP/1.1 200") and b": ping" in got, got[:300]
        assert b"x-stream-id" in got.lower()
    else:
        time.sleep(1.0)
    sock.close()
    left_at = time.time()
    entry = entry_when_ended(fake, model, timeout=10)
    assert entry["client_closed"] and entry["ended"] - left_at < 5
    time.sleep(5)  # > two first-token timeouts: the attempts that would have come
    assert requests_for(fake, model) == 1


def test_pings_then_an_in_band_error_when_no_upstream_ever_answers(
    workdir: Path, fake: FakeUpstream
) -> None:
    config = gateway_config(
        fake, keepalive_interval=0.3, retries={"max_attempts": 2, "backoff_base": 0.01}
    )
    config["providers"][0]["timeouts"] = {"first_token": 1}
    gateway = start_gateway(workdir, config)
    try:
        model = f"fake/gen/5?head_after=3600&ttft=0.{unique()}"
        body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "x"}]}
        r = httpx.post(f"{gateway.base_url}/chat/completions", json=body, timeout=30)
        assert r.status_code == 200
        text = r.text
        assert text.startswith(": ping") and text.count(": ping") >= 2
        assert '"first_token_timeout"' in text and "id:" not in text
        # a fast failure keeps its status, as before
        failing = {**body, "model": f"fake/gen/5?status=400&ttft=0.000{unique()}"}
        assert httpx.post(f"{gateway.base_url}/chat/completions", json=failing).status_code == 400
    finally:
        gateway.proc.stop()
