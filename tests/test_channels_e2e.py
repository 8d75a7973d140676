"""Channels managed live, through real gateway processes and the official SDK: made
through the admin API or the CLI, a channel's model is served at once; its base URL
edited, the next request goes there; disabled, its model is gone (404); with two gateways
sharing PostgreSQL and Redis, a change made through one applies on the other. Upstream
keys are stored encrypted and shown only masked."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select
from support.procs import (
    UPSTREAM_KEY,
    FakeUpstream,
    Gateway,
    gateway_config,
    start_fake,
    start_gateway,
)
from support.services import shared_postgres, shared_redis

from tokenrelay.store import Store
from tokenrelay.store.schema import channel_keys

MASTER = "master-" + "c" * 32
SECRET_ENV = {"TOKENRELAY_SECRET_KEY": "channels-test-secret"}
SRC = Path(__file__).resolve().parents[1] / "src"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
GUARD = 15.0  # seconds a change may take to reach another process (it takes about one)


@pytest.fixture(scope="module")
def second_fake(workdir: Path) -> Iterator[FakeUpstream]:
    upstream = start_fake(workdir)
    yield upstream
    upstream.proc.stop()


def gateway_with(workdir: Path, fake: FakeUpstream, **overrides: Any) -> Gateway:
    config = gateway_config(fake, master_key=MASTER, **overrides)
    return start_gateway(workdir, config, SECRET_ENV)


def ask(gw: Gateway, model: str) -> str:
    client = openai.OpenAI(base_url=gw.base_url, api_key=MASTER, max_retries=0)
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    return reply.choices[0].message.content or ""


def soon(check: Callable[[], bool], guard: float = GUARD) -> bool:
    deadline = time.monotonic() + guard
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def status_of(gw: Gateway, model: str) -> int:
    try:
        ask(gw, model)
    except openai.APIStatusError as exc:
        return exc.status_code
    return 200


def cli(*argv: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tokenrelay.cli", *argv],
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", **SECRET_ENV, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def stored_keys(database_url: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        store = await Store.open(database_url)
        try:
            async with store.engine.connect() as conn:
                return [dict(r._mapping) for r in await conn.execute(select(channel_keys))]
        finally:
            await store.close()

    return asyncio.run(read())


def test_channels_through_the_admin_api(
    workdir: Path, fake: FakeUpstream, second_fake: FakeUpstream
) -> None:
    smart = {"name": "smart", "deployments": ["live/gen/2"], "fallbacks": ["fake/gen/2"]}
    gw = gateway_with(workdir, fake, models=[smart])
    try:
        secret = "live-upstream-key-0000k1k1"
        made = httpx.post(
            f"{gw.url}/admin/channels",
            headers=ADMIN,
            json={"name": "live", "base_url": f"{fake.base_url}/v1", "api_keys": [secret]},
        )
        assert made.status_code == 201, made.text
        assert secret not in made.text and made.json()["keys"][0]["masked"] == "…k1k1"
        assert made.json()["served"] is True
        assert ask(gw, "live/gen/2") == "tok0 tok1 "  # served at once
        assert ask(gw, "smart") == "tok0 tok1 "  # and as a configured model's deployment
        assert fake.find("gen/2")["key"] == "…k1k1"  # with the channel's key
        rows = stored_keys(gw.config["database_url"])
        assert rows and all(secret not in str(v) for r in rows for v in r.values())  # encrypted

        second_fake.clear()
        edited = httpx.patch(
            f"{gw.url}/admin/channels/live",
            headers=ADMIN,
            json={"base_url": f"{second_fake.base_url}/v1"},
        )
        assert edited.status_code == 200, edited.text
        assert ask(gw, "live/gen/3") == "tok0 tok1 tok2 "
        assert second_fake.find("gen/3")["key"] == "…k1k1"  # the next request went there

        off = httpx.patch(f"{gw.url}/admin/channels/live", headers=ADMIN, json={"enabled": False})
        assert off.status_code == 200 and off.json()["served"] is False
        assert status_of(gw, "live/gen/2") == 404
        fake.clear()
        assert ask(gw, "smart") == "tok0 tok1 "  # a configured model falls back
        assert fake.find("gen/2")["key"] == "…" + UPSTREAM_KEY[-4:]  # on the config's provider

        listed = httpx.get(f"{gw.url}/admin/channels", headers=ADMIN).json()["data"]
        config_one = next(c for c in listed if c["name"] == "fake")
        assert config_one["read_only"] is True and config_one["source"] == "config"
        assert UPSTREAM_KEY not in str(listed)  # the config's key shown masked only
        assert config_one["keys"][0]["masked"] == "…" + UPSTREAM_KEY[-4:]
        refused = httpx.patch(f"{gw.url}/admin/channels/fake", headers=ADMIN, json={"models": []})
        assert refused.status_code == 409

        document = httpx.get(f"{gw.url}/admin/openapi.json").json()
        assert {"/admin/channels", "/admin/channels/{name}"} <= set(document["paths"])
        assert "ChannelOut" in document["components"]["schemas"]
        gone = httpx.delete(f"{gw.url}/admin/channels/live", headers=ADMIN)
        assert gone.status_code == 204
        assert httpx.get(f"{gw.url}/admin/channels/live", headers=ADMIN).status_code == 404
        assert secret not in gw.proc.output()  # never logged
    finally:
        gw.proc.stop()


def test_without_a_secret_key_upstream_keys_are_refused(workdir: Path, fake: FakeUpstream) -> None:
    gw = start_gateway(workdir, gateway_config(fake, master_key=MASTER))
    try:
        body = {"name": "nokey", "base_url": f"{fake.base_url}/v1", "api_keys": ["k-12345678"]}
        refused = httpx.post(f"{gw.url}/admin/channels", headers=ADMIN, json=body)
        assert refused.status_code == 400, refused.text
        assert "TOKENRELAY_SECRET_KEY" in refused.json()["error"]["message"]
        body.pop("api_keys")  # a keyless channel (a local vLLM, say) needs no secret key
        assert httpx.post(f"{gw.url}/admin/channels", headers=ADMIN, json=body).status_code == 201
        assert ask(gw, "nokey/gen/1") == "tok0 "
    finally:
        gw.proc.stop()


def test_channels_through_the_cli(
    workdir: Path, fake: FakeUpstream, second_fake: FakeUpstream
) -> None:
    gw = gateway_with(workdir, fake)
    db = gw.config["database_url"]
    try:
        cli(
            "channels", "create", "clich", "--base-url", f"{fake.base_url}/v1",
            "--api-keys-from-env", "CH_KEYS", "--models", "*", "--database-url", db,
            env={"CH_KEYS": "cli-key-000c1c1,cli-key-000c2c2"},
        )  # fmt: skip
        assert soon(lambda: status_of(gw, "clich/gen/2") == 200)  # heard by polling
        listed = cli("channels", "list", "--database-url", db)
        assert "…c1c1" in listed and "cli-key-000c1c1" not in listed
        second_fake.clear()
        cli("channels", "edit", "clich", "--base-url", f"{second_fake.base_url}/v1",
            "--database-url", db)  # fmt: skip

        def moved() -> bool:
            ask(gw, "clich/gen/4")
            return any(e.get("model") == "gen/4" for e in second_fake.log())

        assert soon(moved)
        cli("channels", "disable", "clich", "--database-url", db)
        assert soon(lambda: status_of(gw, "clich/gen/2") == 404)
        cli("channels", "delete", "clich", "--database-url", db)
        assert "clich" not in cli("channels", "list", "--database-url", db)
    finally:
        gw.proc.stop()


def test_a_change_on_one_replica_applies_on_the_other(
    workdir: Path, fake: FakeUpstream, second_fake: FakeUpstream
) -> None:
    database_url = shared_postgres().new_database()
    redis_url = shared_redis().url
    a = gateway_with(workdir, fake, database_url=database_url, redis_url=redis_url)
    b = gateway_with(workdir, fake, database_url=database_url, redis_url=redis_url)
    try:
        body = {"name": "shared", "base_url": f"{fake.base_url}/v1", "api_keys": ["sh-0000s1s1"]}
        assert httpx.post(f"{a.url}/admin/channels", headers=ADMIN, json=body).status_code == 201
        assert soon(lambda: status_of(b, "shared/gen/2") == 200)
        second_fake.clear()
        edit = {"base_url": f"{second_fake.base_url}/v1"}
        assert httpx.patch(f"{b.url}/admin/channels/shared", headers=ADMIN, json=edit).is_success

        def moved() -> bool:
            ask(a, "shared/gen/5")
            return any(e.get("model") == "gen/5" for e in second_fake.log())

        assert soon(moved)
        cli("channels", "disable", "shared", "--database-url", database_url,
            "--redis-url", redis_url)  # fmt: skip
        assert soon(lambda: status_of(a, "shared/gen/2") == 404 == status_of(b, "shared/gen/2"))
    finally:
        a.proc.stop()
        b.proc.stop()
