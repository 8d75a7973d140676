"""EventSource tokens shared through Redis: two gateway processes on one real Redis and
one database (replicas behind a load balancer; ``serve --workers 2`` shares the same
way). A token minted on A starts its stream on B; a second GET of it, on either, is
refused, as is the loser of two GETs racing on A and B; the browser's reconnect with
``Last-Event-ID`` re-attaches on the other one; an expired token, or one whose key was
revoked since, starts nothing; Redis holds the token's SHA-256, never the token; Redis
away, minting and starting are a retryable 503."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from support.procs import FakeUpstream, Gateway, gateway_config, sse_payloads, start_gateway
from support.services import shared_redis, start_redis

from tokenrelay.sse import SSEDecoder

pytestmark = pytest.mark.timeout(120)

MASTER = "master-" + "s" * 32
ADMIN = {"Authorization": f"Bearer {MASTER}"}
PROMPT = "minted on one replica and started on the other"
TTL = 10  # token_ttl: the prompt tests use a token within it, the expiry test waits past it


@pytest.fixture(scope="module")
def pair(workdir: Path, fake: FakeUpstream) -> Iterator[tuple[Gateway, Gateway]]:
    config = gateway_config(
        fake,
        master_key=MASTER,
        redis_url=shared_redis().url,
        database_url=f"sqlite:///{workdir}/tokens-{time.monotonic_ns()}.db",
        local={"rate": 100},
        streams={"grace": 5, "retention": 60, "token_ttl": TTL},
    )
    a = start_gateway(workdir, config)
    b = start_gateway(workdir, config)
    yield a, b
    a.proc.stop()
    b.proc.stop()


def new_key(gw: Gateway) -> tuple[str, str]:
    reply = httpx.post(
        f"{gw.url}/admin/keys", json={"name": "page", "models": ["local/*"]}, headers=ADMIN
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["key"]["id"]), str(reply.json()["secret"])


def mint(gw: Gateway, key: str, prompt: str | None = PROMPT) -> str:
    body = (
        {"model": "local/echo", "messages": [{"role": "user", "content": prompt}]}
        if prompt is not None
        else None
    )
    reply = httpx.post(
        f"{gw.url}/v1/chat/stream", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["expires_in"] == TTL
    return str(reply.json()["token"])


def get(gw: Gateway, token: str, **headers: str) -> httpx.Response:
    return httpx.get(
        f"{gw.url}/v1/chat/stream", params={"token": token}, headers=headers, timeout=30
    )


def text_of(content: bytes) -> str:
    return "".join(
        (p["choices"][0]["delta"].get("content") or "")
        for p in sse_payloads(content)
        if isinstance(p, dict) and p.get("choices")
    )


def refused(reply: httpx.Response, code: str = "invalid_stream_token") -> bool:
    return reply.status_code == 401 and reply.json()["error"]["code"] == code


def test_minted_on_a_started_on_b_once_and_reattached_on_a(
    pair: tuple[Gateway, Gateway],
) -> None:
    a, b = pair
    _, key = new_key(a)
    token = mint(a, key)
    got = get(b, token)
    assert got.status_code == 200, got.text
    assert text_of(got.content) == PROMPT
    frames = list(SSEDecoder().iter([got.content]))
    assert frames[-1].data == "[DONE]"
    assert refused(get(a, token)) and refused(get(b, token))  # one start, wherever
    # the browser's reconnect lands on A: it re-attaches to B's stream, no second one
    last = next(f.id for f in frames if f.id)
    resumed = get(a, token, **{"Last-Event-ID": last})
    assert resumed.status_code == 200, resumed.text
    later = list(SSEDecoder().iter([resumed.content]))
    assert [f.data for f in later] == [f.data for f in frames[1:]]
    # Redis keeps the token's SHA-256, never the token
    client = redis.Redis.from_url(shared_redis().url)
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert client.exists(f"tokenrelay:stream-token:{digest}") == 1
    assert not any(token.encode() in k for k in client.scan_iter("tokenrelay:*"))
    assert not any(token in g.proc.output() for g in (a, b))  # logged by prefix only


def race(
    gw: Gateway, name: str, token: str, go: threading.Barrier, out: dict[str, httpx.Response]
) -> None:
    go.wait()
    out[name] = httpx.get(
        f"{gw.url}/v1/chat/stream",
        params={"token": token, "model": "local/echo", "prompt": "only once"},
        timeout=30,
    )


def test_two_gets_racing_on_a_and_b_start_one_stream(pair: tuple[Gateway, Gateway]) -> None:
    a, b = pair
    _, key = new_key(a)
    for _ in range(3):
        token = mint(b, key, prompt=None)  # a bare token: the request comes in the query
        replies: dict[str, httpx.Response] = {}
        go = threading.Barrier(2)
        threads = [
            threading.Thread(target=race, args=(g, n, token, go, replies))
            for g, n in ((a, "a"), (b, "b"))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        started = [r for r in replies.values() if r.status_code == 200]
        assert len(started) == 1, {n: r.status_code for n, r in replies.items()}
        assert text_of(started[0].content) == "only once"
        assert all(refused(r) for r in replies.values() if r.status_code != 200)


def test_a_key_revoked_after_the_minting_starts_nothing(pair: tuple[Gateway, Gateway]) -> None:
    a, b = pair
    key_id, key = new_key(a)
    token = mint(a, key)
    assert httpx.post(f"{a.url}/admin/keys/{key_id}/revoke", headers=ADMIN).status_code == 200
    reply = get(b, token)
    assert refused(reply, "key_revoked"), reply.text
    assert key not in reply.text


def test_an_expired_token_is_refused_on_either(pair: tuple[Gateway, Gateway]) -> None:
    a, b = pair
    _, key = new_key(a)
    tokens = [mint(a, key), mint(a, key)]
    time.sleep(TTL + 3)  # past the ttl, by Redis's clock too
    assert refused(get(b, tokens[0])) and refused(get(a, tokens[1]))
    client = redis.Redis.from_url(shared_redis().url)
    for token in tokens:
        digest = hashlib.sha256(token.encode()).hexdigest()
        assert client.exists(f"tokenrelay:stream-token:{digest}") == 0


def test_redis_away_is_a_retryable_503_and_the_master_key_mints_too(
    workdir: Path, fake: FakeUpstream
) -> None:
    own = start_redis()
    config = gateway_config(
        fake, master_key=MASTER, redis_url=own.url, streams={"grace": 0, "token_ttl": TTL}
    )
    gw = start_gateway(workdir, config)
    try:
        started = get(gw, mint(gw, MASTER))  # the master key's token: owner "master"
        assert started.status_code == 200 and text_of(started.content) == PROMPT
        token = mint(gw, MASTER)
        own.destroy()
        for reply in (
            httpx.post(f"{gw.url}/v1/chat/stream", headers=ADMIN, timeout=30),
            get(gw, token),
        ):
            assert reply.status_code == 503, reply.text
            assert reply.json()["error"]["code"] == "stream_token_store_unavailable"
            assert reply.headers["retry-after"] == "1"
    finally:
        gw.proc.stop()
        own.destroy()
