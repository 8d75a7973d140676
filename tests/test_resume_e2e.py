"""Streams that survive: a client that lost its connection re-attaches and gets every
frame after the last one it saw — no gap, no duplicate, no regeneration — and a stop
closes the upstream at once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway

from tokenrelay.sse import SSEDecoder

WORDS = " ".join(f"w{i}" for i in range(40))
BODY = {"model": "local/echo", "stream": True, "messages": [{"role": "user", "content": WORDS}]}
# A client that declares it resumes (tokenrelay's SDKs send this): ids, and the grace.
RESUMES = {"X-Tokenrelay-Resume": "1"}


@pytest.fixture(scope="module")
def gw(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    """Slow enough to drop mid-stream (100 words/s), grace long enough to come back."""
    config = gateway_config(fake, local={"rate": 100}, streams={"grace": 5, "retention": 60})
    gateway = start_gateway(workdir, config)
    yield gateway
    gateway.proc.stop()


def text_of(payloads: list[dict[str, Any]]) -> str:
    return "".join(
        (p["choices"][0]["delta"].get("content") or "") for p in payloads if p.get("choices")
    )


def read_frames(response: httpx.Response, limit: int | None = None) -> list[tuple[str, Any]]:
    """(id, payload) for each data frame; stops after ``limit`` frames (a dropped client)."""
    decoder = SSEDecoder()
    out: list[tuple[str, Any]] = []
    for chunk in response.iter_raw():
        for event in decoder.feed(chunk):
            assert event.id is not None, "every data frame carries an id"
            out.append((event.id, event.data if event.data == "[DONE]" else json.loads(event.data)))
            if limit is not None and len(out) >= limit:
                return out
    return out


def start_and_drop(gw: Gateway, after_frames: int) -> tuple[str, list[tuple[str, Any]]]:
    with httpx.stream(
        "POST", f"{gw.base_url}/chat/completions", json=BODY, headers=RESUMES, timeout=10
    ) as r:
        stream_id = r.headers["x-stream-id"]
        frames = read_frames(r, after_frames)
    return stream_id, frames


def assert_whole(frames: list[tuple[str, Any]], stream_id: str) -> None:
    seqs = [int(i.rpartition(":")[2]) for i, _ in frames]
    assert seqs == list(range(1, len(seqs) + 1)), "no gap, no duplicate"
    assert all(i.startswith(stream_id + ":") for i, _ in frames)
    assert frames[-1][1] == "[DONE]"
    assert text_of([p for _, p in frames[:-1]]) == WORDS


def test_frames_carry_stream_ids(gw: Gateway) -> None:
    with httpx.stream(
        "POST", f"{gw.base_url}/chat/completions", json=BODY, headers=RESUMES, timeout=10
    ) as r:
        stream_id = r.headers["x-stream-id"]
        assert stream_id.startswith("st_") and len(stream_id) > 20
        frames = read_frames(r)
    assert_whole(frames, stream_id)


@pytest.mark.parametrize("how", ["get-last-event-id", "get-after", "resend-original"])
def test_resume_after_a_drop(gw: Gateway, how: str) -> None:
    stream_id, first = start_and_drop(gw, 5)
    last_id = first[-1][0]
    if how == "resend-original":
        request = (
            "POST",
            f"{gw.base_url}/chat/completions",
            {"json": BODY, "headers": {"Last-Event-ID": last_id}},
        )
    elif how == "get-after":
        request = ("GET", f"{gw.base_url}/streams/{stream_id}?after=5", {})
    else:
        request = (
            "GET",
            f"{gw.base_url}/streams/{stream_id}",
            {"headers": {"Last-Event-ID": last_id}},
        )
    method, url, kw = request
    with httpx.stream(method, url, timeout=10, **kw) as r:  # type: ignore[arg-type]
        assert r.status_code == 200
        rest = read_frames(r)
    assert_whole(first + rest, stream_id)


def test_resume_after_the_stream_finished(gw: Gateway) -> None:
    stream_id, first = start_and_drop(gw, 3)
    time.sleep(0.8)  # the producer finishes while nobody reads (grace keeps it going)
    with httpx.stream("GET", f"{gw.base_url}/streams/{stream_id}?after=3", timeout=10) as r:
        rest = read_frames(r)
    assert_whole(first + rest, stream_id)


def test_the_resume_route_sets_eventsource_retry(gw: Gateway) -> None:
    stream_id, _ = start_and_drop(gw, 2)
    with httpx.stream("GET", f"{gw.base_url}/streams/{stream_id}?after=2", timeout=10) as r:
        raw = r.read()
    assert raw.startswith(b"retry: ")


def test_unknown_stream_is_404_and_bad_position_400(gw: Gateway) -> None:
    response = httpx.get(f"{gw.base_url}/streams/st_nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "stream_not_found"
    stream_id, _ = start_and_drop(gw, 1)
    assert httpx.get(f"{gw.base_url}/streams/{stream_id}?after=999999").status_code == 400


def test_resume_through_the_openai_sdk_raw_response(gw: Gateway) -> None:
    client = openai.OpenAI(
        base_url=gw.base_url, api_key="k", max_retries=0, default_headers=RESUMES
    )
    raw = client.chat.completions.with_raw_response.create(
        model="local/echo", messages=[{"role": "user", "content": WORDS}], stream=True
    )
    stream_id = raw.headers["x-stream-id"]
    stream = raw.parse()
    text = ""
    for i, chunk in enumerate(stream):
        text += chunk.choices[0].delta.content or "" if chunk.choices else ""
        if i == 4:
            break
    stream.close()  # the connection drops; the last id seen is frame 5
    resumed = client.chat.completions.create(
        model="local/echo",
        messages=[{"role": "user", "content": WORDS}],
        stream=True,
        extra_headers={"Last-Event-ID": f"{stream_id}:5"},
    )
    text += "".join(c.choices[0].delta.content or "" for c in resumed if c.choices)
    assert text == WORDS


def test_cancel_closes_the_upstream_and_ends_the_stream(gw: Gateway, fake: FakeUpstream) -> None:
    model = f"fake/gen/400?gap=0.05&ttft=0.00{time.monotonic_ns() % 10**6:06d}"
    body = {**BODY, "model": model}
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, timeout=10) as r:
        stream_id = r.headers["x-stream-id"]
        decoder = SSEDecoder()
        frames: list[str] = []
        for chunk in r.iter_raw():
            for event in decoder.feed(chunk):
                frames.append(event.data)
            if len(frames) == 4:
                cancelled_at = time.time()
                reply = httpx.post(f"{gw.base_url}/streams/{stream_id}/cancel")
                assert reply.json() == {"id": stream_id, "object": "stream", "status": "cancelled"}
    assert frames[-1] == "[DONE]", "the reader gets a proper end of stream"
    assert json.loads(frames[-2])["choices"][0]["finish_reason"] == "stop"
    entry = fake.find(model.removeprefix("fake/"))
    assert entry["client_closed"] and entry["ended"] - cancelled_at < 3.0  # a guard: ms here
    again = httpx.delete(f"{gw.base_url}/streams/{stream_id}")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


def test_nobody_back_in_time_closes_the_upstream(workdir: Path, fake: FakeUpstream) -> None:
    gateway = start_gateway(workdir, gateway_config(fake, streams={"grace": 0.5}))
    try:
        model = f"fake/gen/400?gap=0.05&ttft=0.00{time.monotonic_ns() % 10**6:06d}"
        with httpx.stream(
            "POST",
            f"{gateway.base_url}/chat/completions",
            json={**BODY, "model": model},
            headers=RESUMES,
        ) as r:
            read_frames(r, 3)
            left_at = time.time()
        entry = fake.find(model.removeprefix("fake/"))
        deadline = time.monotonic() + 5
        while not entry.get("ended") and time.monotonic() < deadline:
            time.sleep(0.05)
            entry = fake.find(model.removeprefix("fake/"))
        assert entry["client_closed"]
        assert 0.4 <= entry["ended"] - left_at < 4.0, "kept for the grace period, then closed"
    finally:
        gateway.proc.stop()


ARGS = json.dumps({"city": "Paris", "days": list(range(12)), "units": "metric", "note": "x" * 40})
TOOL_BODY = {
    **BODY,
    "messages": [{"role": "user", "content": f"/call get_weather {ARGS}"}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
}


def calls_of(payloads: list[dict[str, Any]]) -> dict[int, dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for p in payloads:
        for choice in p.get("choices") or []:
            for call in choice["delta"].get("tool_calls") or []:
                slot = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                slot["id"] = call.get("id") or slot["id"]
                slot["name"] = call.get("function", {}).get("name") or slot["name"]
                slot["arguments"] += call.get("function", {}).get("arguments") or ""
    return calls


def read_with_drops(gw: Gateway, body: dict[str, Any], cuts: list[int]) -> list[tuple[str, Any]]:
    """A client that drops after ``cuts[i]`` frames each time and resumes each time."""
    with httpx.stream(
        "POST", f"{gw.base_url}/chat/completions", json=body, headers=RESUMES, timeout=10
    ) as r:
        stream_id = r.headers["x-stream-id"]
        frames = read_frames(r, cuts[0] if cuts else None)
    for cut in [*cuts[1:], None]:
        if frames and frames[-1][1] == "[DONE]":
            break
        headers = {"Last-Event-ID": frames[-1][0]}
        with httpx.stream(
            "GET", f"{gw.base_url}/streams/{stream_id}", headers=headers, timeout=10
        ) as r:
            frames += read_frames(r, cut)
    return frames


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=12), min_size=0, max_size=4),
    tools=st.booleans(),
)
def test_any_number_of_drops_assembles_the_uninterrupted_answer(
    gw: Gateway, cuts: list[int], tools: bool
) -> None:
    """A client that drops after a random number of frames, any number of times, and
    resumes each time, assembles exactly the text, tool calls and usage of an
    uninterrupted run."""
    body = {**(TOOL_BODY if tools else BODY), "stream_options": {"include_usage": True}}
    whole = [p for _, p in read_with_drops(gw, body, []) if p != "[DONE]"]
    frames = read_with_drops(gw, body, cuts)
    seqs = [int(i.rpartition(":")[2]) for i, _ in frames]
    assert seqs == list(range(1, len(seqs) + 1))
    assert frames[-1][1] == "[DONE]"
    payloads = [p for _, p in frames if p != "[DONE]"]
    assert text_of(payloads) == text_of(whole) == ("" if tools else WORDS)
    got, expected = calls_of(payloads), calls_of(whole)
    assert {i: (c["name"], c["arguments"]) for i, c in got.items()} == {
        i: (c["name"], c["arguments"]) for i, c in expected.items()
    }
    if tools:
        assert json.loads(got[0]["arguments"]) == json.loads(ARGS)
    assert payloads[-1]["usage"] == whole[-1]["usage"]


def test_metrics_count_streams_resumes_and_cancels(gw: Gateway) -> None:
    stream_id, _ = start_and_drop(gw, 3)
    with httpx.stream("GET", f"{gw.base_url}/streams/{stream_id}?after=3", timeout=10) as r:
        read_frames(r)
    stream_id, _ = start_and_drop(gw, 2)
    assert httpx.post(f"{gw.base_url}/streams/{stream_id}/cancel").json()["status"] == "cancelled"
    text = httpx.get(f"{gw.url}/metrics").text
    assert (
        'tokenrelay_requests_total{deployment="local/echo",model="local/echo",outcome="ok",protocol="openai"}'
        in text
    )
    assert "tokenrelay_time_to_first_token_seconds_bucket" in text
    assert 'tokenrelay_tokens_total{direction="out",model="local/echo"}' in text
    assert 'tokenrelay_stream_events_total{event="resumed"}' in text
    assert 'tokenrelay_stream_events_total{event="cancelled"}' in text
    assert "tokenrelay_streams_active" in text and "tokenrelay_streams_detached_total" in text
    assert "tokenrelay_inter_chunk_gap_seconds_count" in text
    assert "sk-" not in text and stream_id not in text, "no key and no stream id in labels"


def test_resume_through_the_anthropic_sdk_raw_response(gw: Gateway) -> None:
    import anthropic

    client = anthropic.Anthropic(
        base_url=gw.url, api_key="k", max_retries=0, default_headers=RESUMES
    )
    body: dict[str, Any] = {
        "model": "local/echo",
        "max_tokens": 500,
        "messages": [{"role": "user", "content": WORDS}],
    }
    with client.messages.with_streaming_response.create(**body, stream=True) as raw:
        stream_id = raw.headers["x-stream-id"]
        decoder, first = SSEDecoder(), []
        for chunk in raw.iter_bytes():
            first += decoder.feed(chunk)
            if len(first) >= 5:
                break
    last_id = [e.id for e in first if e.id][-1]
    # the original request re-sent with Last-Event-ID, through the SDK itself
    rest = client.messages.create(**body, stream=True, extra_headers={"Last-Event-ID": last_id})
    text = "".join(
        json.loads(e.data)["delta"].get("text", "")
        for e in first
        if e.event == "content_block_delta"
    )
    for event in rest:
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            text += event.delta.text
    assert text == WORDS
    assert stream_id.startswith("st_")


def test_an_idle_gateway_lets_expired_streams_go(workdir: Path, fake: FakeUpstream) -> None:
    gateway = start_gateway(workdir, gateway_config(fake, streams={"grace": 0, "retention": 1}))
    try:
        with httpx.stream(
            "POST", f"{gateway.base_url}/chat/completions", json=BODY, headers=RESUMES
        ) as r:
            stream_id = r.headers["x-stream-id"]
            read_frames(r)
        time.sleep(2.5)  # no request in between: only the periodic sweep can evict it
        gone = httpx.get(f"{gateway.base_url}/streams/{stream_id}?after=1")
        assert gone.status_code == 410
        metrics = httpx.get(f"{gateway.url}/metrics").text
        assert 'tokenrelay_stream_events_total{event="resume_410"} 1.0' in metrics
        assert f"resume {stream_id} after=1 status=410" in gateway.proc.output()
    finally:
        gateway.proc.stop()
