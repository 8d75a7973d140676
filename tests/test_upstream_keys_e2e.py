"""Many upstream keys per channel, through a real gateway and the fake upstream: requests
spread over the keys; a key answered 429 rests for its Retry-After and comes back after
it; a key answered 401 is disabled; no request fails while another key works; the usage
record names the key that served it (by id), and no key's secret reaches the logs.

The requests repeat one conversation, which affinity would keep on one key
(``test_affinity_e2e.py``): they go through ``spread``, a model with ``affinity:
false``, so that they take the keys in turn."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import select
from support.procs import FakeUpstream, Gateway, start_fake, start_gateway

from tokenrelay.providers.keys import key_id
from tokenrelay.store import Store
from tokenrelay.store.schema import usage

GOOD = ["uk-good-0000aaa1", "uk-good-0000bbb2"]
LONG_REST = "uk-busy-429-600-0000ccc3"  # rests 10 minutes: seen once in this test
SHORT_REST = "uk-busy-429-1-0000ddd4"  # rests 1 s: back after it
REVOKED = "uk-gone-401-0000eee5"
KEYS = [*GOOD, LONG_REST, SHORT_REST, REVOKED]


@pytest.fixture(scope="module")
def own_fake(workdir: Path) -> Iterator[FakeUpstream]:
    upstream = start_fake(workdir)  # its own: the per-key counts are this module's
    yield upstream
    upstream.proc.stop()


@pytest.fixture(scope="module")
def gateway(workdir: Path, own_fake: FakeUpstream) -> Iterator[Gateway]:
    config: dict[str, Any] = {
        "env_providers": False,
        "providers": [
            {
                "name": "multi",
                "base_url": f"{own_fake.base_url}/v1",
                "api_keys": KEYS,
                "models": ["*"],
            }
        ],
        "models": [{"name": "spread", "deployments": ["multi/gen/3"], "affinity": False}],
    }
    gw = start_gateway(workdir, config)
    yield gw
    gw.proc.stop()


def _usage_rows(database_url: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        store = await Store.open(database_url)
        try:
            async with store.engine.connect() as conn:
                return [dict(r._mapping) for r in await conn.execute(select(usage))]
        finally:
            await store.close()

    return asyncio.run(read())


def test_requests_spread_over_keys_and_failing_keys_step_aside(
    gateway: Gateway, own_fake: FakeUpstream
) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    for i in range(16):
        if i % 2:
            stream = client.chat.completions.create(
                model="spread", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        else:
            reply = client.chat.completions.create(
                model="spread", messages=[{"role": "user", "content": "hi"}]
            )
            text = reply.choices[0].message.content or ""
        assert text == "tok0 tok1 tok2 "  # every request served: no failure reached a client
    seen = own_fake.per_key()
    assert seen.get("…aaa1", 0) >= 3 and seen.get("…bbb2", 0) >= 3, seen  # spread
    assert seen.get("…eee5") == 1, seen  # 401 once: disabled, never tried again
    assert seen.get("…ccc3") == 1, seen  # 429 with Retry-After 600: resting since

    time.sleep(1.5)  # past the short rest (and far from the long one)
    before = seen.get("…ddd4", 0)
    for _ in range(8):
        client.chat.completions.create(
            model="spread", messages=[{"role": "user", "content": "again"}]
        )
    after = own_fake.per_key()
    assert after.get("…ddd4", 0) > before, after  # its rest ended: tried again
    assert after.get("…ccc3") == 1 and after.get("…eee5") == 1, after

    served = {key_id("multi", k) for k in GOOD}
    deadline = time.monotonic() + 15
    while True:
        rows = [r for r in _usage_rows(gateway.config["database_url"]) if r["outcome"] == "ok"]
        if len(rows) >= 24 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert len(rows) == 24
    assert {r["upstream_key_id"] for r in rows} == served  # named by id, only good keys

    output = gateway.proc.output()
    assert "disabled" in output and key_id("multi", REVOKED) in output  # flagged
    for secret in KEYS:
        assert secret not in output  # never logged
