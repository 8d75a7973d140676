"""Keys, limits and usage through real gateway processes, on SQLite and PostgreSQL:
a request without a valid key never reaches an upstream; a key sees only its models
and its streams; limits answer 429 in the client's protocol; every stream — complete,
stopped, disconnected or resumed — is recorded exactly once with the upstream's counts;
two gateways sharing Redis and PostgreSQL hold one key's limit together."""

from __future__ import annotations

import asyncio
import json
import threading
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
from support.services import shared_postgres, shared_redis

from tokenrelay.sse import SSEDecoder
from tokenrelay.store import Store
from tokenrelay.store.schema import usage

MASTER = "master-" + "m" * 32


def rows(database_url: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        store = await Store.open(database_url)
        try:
            async with store.engine.connect() as conn:
                result = await conn.execute(select(usage))
                return [dict(r._mapping) for r in result]
        finally:
            await store.close()

    return asyncio.run(read())


def wait_for_rows(
    database_url: str, request_ids: set[str], timeout: float = 10
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in rows(database_url) if r["request_id"] in request_ids]
        if len({r["request_id"] for r in found}) == len(request_ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def secured(request: pytest.FixtureRequest, workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    if request.param == "postgresql":
        database_url = shared_postgres().new_database()
    else:
        database_url = f"sqlite:///{workdir}/accounts-{time.monotonic_ns()}.db"
    config = gateway_config(
        fake,
        master_key=MASTER,
        database_url=database_url,
        local={"rate": 100},
        streams={"grace": 5},
        usage={"flush_interval": 0.1},
    )
    gateway = start_gateway(workdir, config)
    yield gateway
    gateway.proc.stop()


def new_key(gw: Gateway, **spec: Any) -> str:
    reply = httpx.post(
        f"{gw.url}/admin/keys",
        json={"name": "test", **spec},
        headers={"Authorization": f"Bearer {MASTER}"},
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["secret"])


def chat(gw: Gateway, key: str | None, model: str = "local/echo", **body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    payload = {"model": model, "messages": [{"role": "user", "content": "one two three"}], **body}
    return httpx.post(f"{gw.base_url}/chat/completions", json=payload, headers=headers, timeout=20)


def test_no_valid_key_never_reaches_an_upstream(secured: Gateway, fake: FakeUpstream) -> None:
    fake.clear()
    for key in (None, "sk-wrong", "tr-" + "x" * 40):
        response = chat(secured, key, model="fake/gen/3")
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=secured.url, api_key="nope", max_retries=0).messages.create(
            model="fake/gen/3", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert fake.log() == []


def test_a_key_sees_and_uses_only_its_models(secured: Gateway) -> None:
    key = new_key(secured, models=["local/*"])
    client = openai.OpenAI(base_url=secured.base_url, api_key=key, max_retries=0)
    assert [m.id for m in client.models.list()] == [
        "local/echo",
        "local/embed",
    ]  # local/embed: /v1/embeddings
    assert client.chat.completions.create(
        model="local/echo", messages=[{"role": "user", "content": "hi"}]
    )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="fake/gen/2", messages=[{"role": "user", "content": "x"}]
        )


def test_rpm_limit_is_a_429_naming_the_limit_in_both_protocols(secured: Gateway) -> None:
    key = new_key(secured, rpm=2)
    assert chat(secured, key).status_code == 200
    assert chat(secured, key).status_code == 200
    third = chat(secured, key)
    assert third.status_code == 429 and "rpm" in third.json()["error"]["message"]
    assert int(third.headers["retry-after"]) > 0
    with pytest.raises(anthropic.RateLimitError) as info:
        anthropic.Anthropic(base_url=secured.url, api_key=key, max_retries=0).messages.create(
            model="local/echo", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert "rpm" in str(info.value)


def test_budget_stops_a_key_that_spent_it(secured: Gateway) -> None:
    key = new_key(secured, budget_usd=0.0)
    response = chat(secured, key, model="fake/gen/3")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"


def test_streams_are_a_key_s_own(secured: Gateway) -> None:
    mine, theirs = new_key(secured), new_key(secured)
    body = {
        "model": "local/echo",
        "stream": True,
        "messages": [{"role": "user", "content": "a b c"}],
    }
    response = httpx.post(
        f"{secured.base_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {mine}"},
    )
    stream_id = response.headers["x-stream-id"]
    other = {"Authorization": f"Bearer {theirs}"}
    assert httpx.get(f"{secured.base_url}/streams/{stream_id}", headers=other).status_code == 404
    assert (
        httpx.post(f"{secured.base_url}/streams/{stream_id}/cancel", headers=other).status_code
        == 404
    )
    own = {"Authorization": f"Bearer {mine}"}
    assert (
        httpx.get(f"{secured.base_url}/streams/{stream_id}?after=0", headers=own).status_code == 200
    )


def stream_ids(
    gw: Gateway, key: str, model: str, keep: int | None, **extra: Any
) -> tuple[str, str, list[Any]]:
    """Start a stream; read ``keep`` frames (all if None), then drop the connection."""
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "x"}], **extra}
    frames: list[Any] = []
    with httpx.stream(
        "POST",
        f"{gw.base_url}/chat/completions",
        json=body,
        # a client that resumes (its drop is read on for the grace), as tokenrelay's SDKs
        headers={"Authorization": f"Bearer {key}", "X-Tokenrelay-Resume": "1"},
        timeout=20,
    ) as r:
        decoder = SSEDecoder()
        for chunk in r.iter_raw():
            for event in decoder.feed(chunk):
                frames.append(event)
            if keep is not None and len(frames) >= keep:
                break
        return r.headers["x-request-id"], r.headers["x-stream-id"], frames


def test_every_stream_is_recorded_once_with_the_upstream_counts(secured: Gateway) -> None:
    key = new_key(secured)
    auth = {"Authorization": f"Bearer {key}"}
    database = secured.config["database_url"]
    # complete: the upstream's counts (gen/N: N output tokens, one per prompt word)
    complete, _, _ = stream_ids(secured, key, "fake/gen/12", None)
    # stopped by the user mid-stream: what was generated, estimated (upstream closed)
    stopped, stopped_stream, _ = stream_ids(secured, key, "fake/gen/400?gap=0.02", 4)
    httpx.post(f"{secured.base_url}/streams/{stopped_stream}/cancel", headers=auth)
    # disconnected, nobody back within the grace: the upstream is read to its end
    dropped, _, _ = stream_ids(secured, key, "fake/gen/30?gap=0.01", 3)
    # disconnected and resumed twice: still one record
    resumed, resumed_stream, first = stream_ids(secured, key, "fake/gen/40?gap=0.02", 3)
    for _ in range(2):
        with httpx.stream(
            "GET",
            f"{secured.base_url}/streams/{resumed_stream}",
            headers={**auth, "Last-Event-ID": str(first[-1].id)},
            timeout=20,
        ) as r:
            for chunk in r.iter_raw():
                first += SSEDecoder().feed(chunk) or []
                break
    found = wait_for_rows(database, {complete, stopped, dropped, resumed}, timeout=15)
    by_id: dict[str, list[dict[str, Any]]] = {}
    for row in found:
        by_id.setdefault(row["request_id"], []).append(row)
    assert {k: len(v) for k, v in by_id.items()} == dict.fromkeys(
        (complete, stopped, dropped, resumed), 1
    )
    done = by_id[complete][0]
    assert (done["output_tokens"], done["estimated"], done["outcome"]) == (12, False, "ok")
    assert done["input_tokens"] == 1 and done["key_id"] is not None
    assert by_id[dropped][0]["output_tokens"] == 30 and not by_id[dropped][0]["estimated"]
    stop = by_id[stopped][0]
    assert stop["outcome"] == "cancelled" and stop["estimated"] and 0 < stop["output_tokens"] < 400
    assert by_id[resumed][0]["output_tokens"] == 40


@pytest.fixture(scope="module")
def pair(workdir: Path, fake: FakeUpstream) -> Iterator[tuple[Gateway, Gateway]]:
    database_url = shared_postgres().new_database()
    redis_url = shared_redis().url
    config = gateway_config(fake, master_key=MASTER, database_url=database_url, redis_url=redis_url)
    a, b = start_gateway(workdir, config), start_gateway(workdir, config)
    yield a, b
    a.proc.stop()
    b.proc.stop()


def test_two_gateways_hold_one_key_s_limit_together(pair: tuple[Gateway, Gateway]) -> None:
    a, b = pair
    key = new_key(a, rpm=10)
    statuses: list[int] = []

    def hit(gw: Gateway) -> None:
        statuses.append(chat(gw, key).status_code)

    threads = [threading.Thread(target=hit, args=(a if i % 2 else b,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(statuses) == [200] * 10 + [429] * 6


def test_usage_report_through_the_admin_api(secured: Gateway) -> None:
    key = new_key(secured)
    assert chat(secured, key).status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        report = httpx.get(
            f"{secured.url}/admin/usage?by=model", headers={"Authorization": f"Bearer {MASTER}"}
        ).json()
        if any(r["group"] == "local/echo" for r in report["data"]):
            break
        time.sleep(0.2)
    assert any(r["group"] == "local/echo" and r["requests"] >= 1 for r in report["data"]), (
        json.dumps(report)
    )


def test_a_database_outage_loses_no_record_and_fails_no_request(
    workdir: Path, fake: FakeUpstream
) -> None:
    from support.services import start_postgres

    pg = start_postgres()
    database_url = pg.new_database()
    gw = start_gateway(
        workdir,
        gateway_config(
            fake, database_url=database_url, usage={"flush_interval": 0.1, "retry_max": 0.5}
        ),
    )
    try:
        ids = set()
        for phase in ("before", "during", "after"):
            if phase == "during":
                pg.stop()
            if phase == "after":
                pg.start()
            for _ in range(10):
                response = chat(gw, None, model="fake/gen/4")
                assert response.status_code == 200, f"{phase}: {response.text}"
                ids.add(response.headers["x-request-id"])
        found = wait_for_rows(database_url, ids, timeout=30)
        assert sorted(r["request_id"] for r in found) == sorted(ids), "each request exactly once"
        assert all(r["output_tokens"] == 4 for r in found)
    finally:
        gw.proc.stop()
        pg.destroy()


def test_count_tokens_needs_a_key_and_is_never_recorded(secured: Gateway) -> None:
    """``messages.count_tokens`` is authenticated like a generation, limited to the key's
    models, and leaves no usage record (it is no generation: never billed)."""
    body = {"messages": [{"role": "user", "content": "one two three"}]}
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(
            base_url=secured.url, api_key="nope", max_retries=0
        ).messages.count_tokens(model="fakeant/echo", **body)
    key = new_key(secured, models=["fakeant/*", "local/*"])
    client = anthropic.Anthropic(base_url=secured.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="fake/echo", **body)
    database = secured.config["database_url"]
    before = len(rows(database))
    for model in ("fakeant/echo", "local/echo"):
        assert client.messages.count_tokens(model=model, **body).input_tokens == 3
    marker = chat(secured, key)  # a generation, recorded: the writer has flushed after it
    assert marker.status_code == 200
    found = wait_for_rows(database, {marker.headers["x-request-id"]})
    assert len(found) == 1
    assert len(rows(database)) == before + 1, "the counts left no usage record"
