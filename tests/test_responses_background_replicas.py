"""Background Responses across two gateway processes that share Redis and PostgreSQL,
with the official ``openai`` SDK: created on A, its stream dropped and resumed on B with
``starting_after`` (no gap, no duplicate), polled and cancelled through B (A's upstream
connection closes); and when A dies mid-way, B reports it ``failed``, not running
for ever (README: "Background responses")."""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway
from support.services import shared_postgres, shared_redis

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def pair(workdir: Path, fake: FakeUpstream) -> Iterator[tuple[Gateway, Gateway]]:
    config = gateway_config(
        fake,
        redis_url=shared_redis().url,
        database_url=shared_postgres().new_database(),
        keepalive_interval=0.2,
        streams={"grace": 0},
    )
    a, b = start_gateway(workdir, config), start_gateway(workdir, config)
    yield a, b
    a.proc.stop()
    b.proc.stop()


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="sk-client", max_retries=0)


def read(stream: Any, keep: int | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with stream:
        for event in stream:
            out.append(dict(event.model_dump(mode="json", exclude_none=True)))
            if keep is not None and len(out) >= keep:
                break
    return out


def tagged(scene: str) -> str:
    return f"fake/{scene}&ttft=0.00{secrets.randbelow(10**6):06d}"


def test_created_on_a_resumed_polled_and_cancelled_through_b(
    pair: tuple[Gateway, Gateway], fake: FakeUpstream
) -> None:
    a, b = (client(g) for g in pair)
    model = tagged("gen/80?gap=0.02")
    first = read(a.responses.create(model=model, input="x", background=True, stream=True), 5)
    id = first[0]["response"]["id"]
    assert b.responses.retrieve(id).status == "in_progress"
    rest = read(b.responses.retrieve(id, stream=True, starting_after=first[-1]["sequence_number"]))
    events = first + rest
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.completed"
    deltas = "".join(e.get("delta", "") for e in events if e["type"].endswith("text.delta"))
    assert deltas.split() == [f"tok{i}" for i in range(80)]
    deadline = time.monotonic() + 10
    while (done := b.responses.retrieve(id)).status != "completed":
        assert time.monotonic() < deadline, done.status
        time.sleep(0.05)

    model = tagged("gen/2000?gap=0.02")
    created = a.responses.create(model=model, input="long", background=True)
    upstream = model.partition("/")[2]
    fake.find(upstream, timeout=10)
    asked = time.time()
    assert b.responses.cancel(created.id).status == "cancelled"
    deadline = time.monotonic() + 10
    entry = fake.find(upstream)
    while not entry.get("ended") and time.monotonic() < deadline:
        time.sleep(0.05)
        entry = fake.find(upstream)
    # a guard far above the expected milliseconds (Redis pub/sub, then the stop)
    assert entry["client_closed"] and entry["ended"] - asked < 5.0
    assert a.responses.retrieve(created.id).status == "cancelled"


def test_a_response_whose_gateway_died_is_failed_on_the_other(
    pair: tuple[Gateway, Gateway],
) -> None:
    a_gw, b_gw = pair
    a, b = client(a_gw), client(b_gw)
    created = a.responses.create(model=tagged("gen/2000?gap=0.02"), input="x", background=True)
    deadline = time.monotonic() + 10
    while b.responses.retrieve(created.id).status != "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    a_gw.proc.popen.send_signal(signal.SIGKILL)
    a_gw.proc.popen.wait(5)
    deadline = time.monotonic() + 30  # the producer's heartbeat lapses after 4 s
    while (found := b.responses.retrieve(created.id)).status == "in_progress":
        assert time.monotonic() < deadline, "still in progress, 30 s after its gateway died"
        time.sleep(0.2)
    assert found.status == "failed" and found.error is not None
    assert found.error.code == "server_error"
    assert b.responses.cancel(created.id).status == "failed"  # nothing left to stop
