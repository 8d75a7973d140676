"""Faults before and after the first byte, injected by the fake upstream: retries with
backoff across deployments and fallbacks, Retry-After, first-token and idle timeouts,
drops at every frame position, circuit breaking, least-in-flight balancing."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway
from support.usage_rows import wait_for_rows

from tokenrelay.sse import SSEDecoder

TAG = secrets.randbelow(10**6)  # makes the fake's per-model failure counters ours alone


def m(spec: str) -> str:
    """A fake-upstream model string unique to this test session."""
    return f"{spec}{'&' if '?' in spec else '?'}ttft=0.00{TAG:06d}"


MODELS = {
    "flaky": {
        "deployments": [f"fake/{m('gen/5?status=500')}"],
        "fallbacks": [f"fake/{m('gen/6')}"],
    },
    "limited": {"deployments": [f"fake/{m('gen/4?fail_times=1&status=429&retry_after=1')}"]},
    "slowstart": {
        "deployments": [f"fake/{m('gen/3?ttft=5')}".replace(f"&ttft=0.00{TAG:06d}", "")],
        "fallbacks": [f"fake/{m('gen/2')}"],
        "timeouts": {"first_token": 0.5},
    },
    "stalls": {"deployments": [f"fake/{m('gen/10?stall_after=3')}"], "timeouts": {"idle": 0.5}},
    "long": {"deployments": [f"fake/{m('gen/100?gap=0.05')}"], "timeouts": {"total": 0.6}},
    "broken": {
        "deployments": [f"fake/{m('gen/2?status=503')}"],
        "fallbacks": [f"fake/{m('gen/3')}"],
    },
    "refused": {
        "deployments": [f"fake/{m('gen/2?status=400')}"],
        "fallbacks": [f"fake/{m('gen/7')}"],
    },
    "dropsatonce": {"deployments": [f"fake/{m('gen/3?drop_after=0')}"]},
    "neverstarts": {
        "deployments": [f"fake/gen/3?ttft=5&gap=0.00{TAG:06d}"],
        "timeouts": {"first_token": 0.3},
    },
    "pair": {
        "deployments": [
            f"fake/gen/3?gap=0.2&ttft=0.001{TAG:06d}",
            {"model": f"fake/gen/3?gap=0.2&ttft=0.002{TAG:06d}", "weight": 1},
        ],
        # four copies of one request are one conversation: affinity would keep them
        # together (tests/test_affinity_e2e.py); this test is about least in flight
        "affinity": False,
    },
}


@pytest.fixture(scope="module")
def gw(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    config = gateway_config(
        fake,
        models=[{"name": name, **spec} for name, spec in MODELS.items()],
        retries={"backoff_base": 0.05, "breaker_failures": 2, "breaker_cooldown": 60},
        streams={"grace": 0},
    )
    gateway = start_gateway(workdir, config)
    yield gateway
    gateway.proc.stop()


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="k", max_retries=0)


def upstream_requests(fake: FakeUpstream, model: str) -> list[dict[str, Any]]:
    return [e for e in fake.log() if (e.get("body") or {}).get("model") == model]


def stream_payloads(gw: Gateway, model: str) -> list[Any]:
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, timeout=20) as r:
        assert r.status_code == 200
        events = list(SSEDecoder().iter(r.iter_raw()))
    return [e.data if e.data == "[DONE]" else json.loads(e.data) for e in events]


def text(payloads: list[Any]) -> str:
    return "".join(
        p["choices"][0]["delta"].get("content") or ""
        for p in payloads
        if isinstance(p, dict) and p.get("choices")
    )


def test_500_then_the_fallback_succeeds(gw: Gateway) -> None:
    raw = client(gw).chat.completions.with_raw_response.create(
        model="flaky", messages=[{"role": "user", "content": "x"}]
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "".join(f"tok{i} " for i in range(6))
    assert raw.headers["x-tokenrelay-attempts"] == "2"
    assert raw.headers["x-tokenrelay-deployment"] == f"fake/{m('gen/6')}"


def test_429_with_retry_after_is_waited_for(gw: Gateway, fake: FakeUpstream) -> None:
    payloads = stream_payloads(gw, "limited")
    assert text(payloads) == "".join(f"tok{i} " for i in range(4))
    first, second = upstream_requests(fake, m("gen/4?fail_times=1&status=429&retry_after=1"))[-2:]
    assert first["status"] == 429 and second["status"] == 200
    assert second["started"] - first["ended"] >= 0.95, (
        "Retry-After: 1 was honoured"
    )  # (two clocks: ms apart)


def test_first_token_timeout_moves_to_the_fallback(gw: Gateway, fake: FakeUpstream) -> None:
    payloads = stream_payloads(gw, "slowstart")
    assert text(payloads) == "tok0 tok1 "
    assert payloads[-1] == "[DONE]"
    (slow,) = upstream_requests(fake, "gen/3?ttft=5")[-1:]
    assert slow["client_closed"], "the slow upstream was closed"


def test_idle_timeout_after_the_first_byte_is_an_in_band_error(
    gw: Gateway, fake: FakeUpstream
) -> None:
    payloads = stream_payloads(gw, "stalls")
    assert text(payloads) == "tok0 tok1 "  # role, tok0, tok1: three events, then silence
    assert payloads[-1]["error"]["code"] == "idle_timeout"
    assert upstream_requests(fake, m("gen/10?stall_after=3"))[-1]["client_closed"]


def test_the_total_timeout_ends_a_stream_in_band_and_a_whole_answer_with_a_504(
    gw: Gateway, fake: FakeUpstream
) -> None:
    """100 chunks 50 ms apart with 0.6 s allowed in all: the stream gets some, then the
    error frame; the non-streaming call gets the error; the upstream is closed."""
    started = time.monotonic()
    payloads = stream_payloads(gw, "long")
    assert time.monotonic() - started > 0.55
    assert 3 < len(text(payloads).split()) < 100  # cut short: the whole takes 5 s
    assert payloads[-1]["error"]["code"] == "total_timeout"
    assert upstream_requests(fake, m("gen/100?gap=0.05"))[-1]["client_closed"]
    with pytest.raises(openai.APIStatusError) as info:
        client(gw).chat.completions.create(
            model="long", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 504
    assert "took longer than 0.6s" in str(info.value)


# Upstream events of gen/5 (the gateway always asks for usage): role, 5 texts, finish,
# usage, [DONE] = 9. The client did not ask for usage, so 7 of them are visible to it.
@pytest.mark.parametrize("k", range(0, 9))
def test_drop_after_every_frame_position(gw: Gateway, k: int) -> None:
    whole = stream_payloads(gw, "fake/gen/5")
    dropped = stream_payloads(gw, f"fake/gen/5?drop_after={k}")
    assert "error" in dropped[-1], "a drop is never a silent end"
    visible = min(k, 7)
    # k == 0: nothing reached the client, so it was retried; every attempt dropped too.
    assert [p["choices"] for p in dropped[:-1]] == [p["choices"] for p in whole[:visible]]


def test_the_breaker_takes_a_failing_deployment_out(gw: Gateway, fake: FakeUpstream) -> None:
    attempts = []
    for _ in range(4):
        raw = client(gw).chat.completions.with_raw_response.create(
            model="broken", messages=[{"role": "user", "content": "x"}]
        )
        assert raw.parse().choices[0].message.content == "tok0 tok1 tok2 "
        attempts.append(raw.headers["x-tokenrelay-attempts"])
    assert attempts == ["2", "2", "1", "1"], "after 2 failures the fallback is tried first"
    assert len(upstream_requests(fake, m("gen/2?status=503"))) == 2


def test_a_client_error_is_not_retried(gw: Gateway, fake: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError):
        client(gw).chat.completions.create(
            model="refused", messages=[{"role": "user", "content": "x"}]
        )
    assert len(upstream_requests(fake, m("gen/2?status=400"))) == 1
    assert upstream_requests(fake, m("gen/7")) == [], (
        "no fallback for a request the upstream refused"
    )


def test_least_in_flight_spreads_concurrent_streams(gw: Gateway, fake: FakeUpstream) -> None:
    results: list[str] = []

    def one() -> None:
        results.append(text(stream_payloads(gw, "pair")))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == ["tok0 tok1 tok2 "] * 4
    a = upstream_requests(fake, f"gen/3?gap=0.2&ttft=0.001{TAG:06d}")
    b = upstream_requests(fake, f"gen/3?gap=0.2&ttft=0.002{TAG:06d}")
    assert len(a) == 2 and len(b) == 2


@pytest.mark.parametrize(
    ("model", "upstream", "message"),
    [
        ("dropsatonce", m("gen/3?drop_after=0"), "failed while streaming"),
        ("neverstarts", f"gen/3?ttft=5&gap=0.00{TAG:06d}", "sent nothing for 0.3s"),
    ],
    ids=["opens-then-drops", "first-token-timeout"],
)
def test_an_attempt_that_opens_then_fails_counts_once(
    gw: Gateway, fake: FakeUpstream, model: str, upstream: str, message: str
) -> None:
    """Each attempt opens (200, headers) and then fails before the first byte: every
    one of max_attempts (4) is made, and each is counted once, in the fake's log, the
    usage row and the gateway's log; a timeout's message names the limit that fired."""
    before = len(upstream_requests(fake, upstream))
    reply = httpx.post(
        f"{gw.base_url}/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "x"}]},
        timeout=30,
    )
    assert reply.status_code >= 500
    assert message in reply.json()["error"]["message"]
    assert len(upstream_requests(fake, upstream)) - before == 4
    request_id = reply.headers["x-request-id"]
    row = wait_for_rows(gw.config["database_url"], {request_id})[request_id]
    assert row["attempts"] == 4
    assert (row["input_tokens"], row["output_tokens"]) == (0, 0), "no attempt answered"
    lines = [line for line in gw.proc.output().splitlines() if request_id in line]
    numbers = [line.split(" attempt ")[1].split()[0] for line in lines if " attempt " in line]
    assert numbers == ["1", "2", "3", "4"], lines
