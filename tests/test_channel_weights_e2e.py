"""Channel weights and per-channel timeouts, from the user's side: real gateway processes,
a fake upstream of this module's own that counts requests per key (each channel has a
key of its own, so the counts say which channel served), the OpenAI SDK as the client.

A model several channels list is spread over them by their weights: in the config file,
in the database through the admin API, and through the CLI; a `models:` entry's
deployments take their channel's weight unless they give one. A channel's timeouts,
set through the CLI, apply to its requests."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from support.procs import FakeUpstream, Gateway, start_fake, start_gateway

MASTER = "master-" + "w" * 32
ADMIN = {"Authorization": f"Bearer {MASTER}"}
SECRET_ENV = {"TOKENRELAY_SECRET_KEY": "weights-test-secret"}
SRC = Path(__file__).resolve().parents[1] / "src"
LIGHT, HEAVY = "wt-key-0000lite", "wt-key-0000hevy"
N = 200
_turns = itertools.count()


@pytest.fixture(scope="module")
def own_fake(workdir: Path) -> Iterator[FakeUpstream]:
    upstream = start_fake(workdir)  # its own: the per-key counts are this module's
    yield upstream
    upstream.proc.stop()


def provider(fake: FakeUpstream, name: str, key: str, weight: float | None) -> dict[str, Any]:
    p: dict[str, Any] = {
        "name": name,
        "base_url": f"{fake.base_url}/v1",
        "api_key": key,
        "models": ["gen/2", "gen/3"],
    }
    if weight is not None:
        p["weight"] = weight
    return p


def ask(gw: Gateway, model: str) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key=MASTER, max_retries=0)
    # a new conversation each time (affinity keeps one conversation on one channel)
    content = f"turn {next(_turns)}"
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}])


def shares(gw: Gateway, fake: FakeUpstream, model: str) -> float:
    """The heavy channel's share of ``N`` requests for ``model``, one at a time."""
    fake.clear()
    for _ in range(N):
        ask(gw, model)
    counts = fake.per_key()
    light, heavy = counts.get("…" + LIGHT[-4:], 0), counts.get("…" + HEAVY[-4:], 0)
    assert light + heavy == N, counts
    return heavy / N


def test_config_weights_spread_a_model_over_its_channels(
    workdir: Path, own_fake: FakeUpstream
) -> None:
    config = {
        "env_providers": False,
        "master_key": MASTER,
        "providers": [
            provider(own_fake, "light", LIGHT, None),  # weight 1, the default
            provider(own_fake, "heavy", HEAVY, 3),
        ],
        "models": [
            {"name": "pair", "deployments": ["light/gen/3", "heavy/gen/3"]},
            {
                "name": "evened",
                "deployments": ["light/gen/3", {"model": "heavy/gen/3", "weight": 1}],
            },
        ],
    }
    gw = start_gateway(workdir, config)
    try:
        # 3 : 1 is a share of 0.75; the bounds are ~5 standard deviations of 200 draws
        assert 0.6 < shares(gw, own_fake, "gen/2") < 0.9, "a bare name both channels list"
        assert 0.6 < shares(gw, own_fake, "pair") < 0.9, "deployments take their channel's weight"
        assert 0.35 < shares(gw, own_fake, "evened") < 0.65, "a deployment's own weight wins"
    finally:
        gw.proc.stop()


def cli(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tokenrelay.cli", *argv],
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", **SECRET_ENV},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def soon_weight(gw: Gateway, name: str, weight: float) -> None:
    deadline = time.monotonic() + 15  # the CLI's change is heard by polling (2 s)
    while time.monotonic() < deadline:
        listed = httpx.get(f"{gw.url}/admin/channels/{name}", headers=ADMIN, timeout=10).json()
        if listed["weight"] == weight and listed["served"]:
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} never reached weight {weight}")


def test_database_weights_through_the_admin_api_and_the_cli(
    workdir: Path, own_fake: FakeUpstream
) -> None:
    gw = start_gateway(
        workdir, {"env_providers": False, "master_key": MASTER, "local": {"enabled": False}},
        SECRET_ENV,
    )  # fmt: skip
    db = gw.config["database_url"]
    try:
        for name, key, weight in (("dblight", LIGHT, 1), ("dbheavy", HEAVY, 4)):
            body = {
                "name": name,
                "base_url": f"{own_fake.base_url}/v1",
                "models": ["gen/2"],
                "api_keys": [key],
                "weight": weight,
            }
            reply = httpx.post(f"{gw.url}/admin/channels", headers=ADMIN, json=body, timeout=10)
            assert reply.status_code == 201, reply.text
            assert reply.json()["weight"] == weight
        assert 0.65 < shares(gw, own_fake, "gen/2") < 0.95, "4 : 1 is a share of 0.8"

        bad = httpx.patch(
            f"{gw.url}/admin/channels/dbheavy", headers=ADMIN, json={"weight": 0}, timeout=10
        )
        assert bad.status_code == 400 and "weight" in bad.text
        edit = {"weight": 1}
        assert httpx.patch(
            f"{gw.url}/admin/channels/dbheavy", headers=ADMIN, json=edit, timeout=10
        ).is_success
        assert 0.35 < shares(gw, own_fake, "gen/2") < 0.65, "edited to 1 : 1, live"

        cli("channels", "edit", "dblight", "--weight", "4", "--database-url", db)
        soon_weight(gw, "dblight", 4)
        assert 0.05 < shares(gw, own_fake, "gen/2") < 0.35, "the CLI's 1 : 4"
        assert "weight 4" in cli("channels", "list", "--database-url", db)
    finally:
        gw.proc.stop()


def test_a_channel_timeout_set_through_the_cli_applies(
    workdir: Path, own_fake: FakeUpstream
) -> None:
    gw = start_gateway(workdir, {"env_providers": False, "master_key": MASTER}, SECRET_ENV)
    db = gw.config["database_url"]
    try:
        cli(
            "channels", "create", "slowch", "--base-url", f"{own_fake.base_url}/v1",
            "--timeout", "first_token=0.5", "--database-url", db,
        )  # fmt: skip
        client = openai.OpenAI(base_url=gw.base_url, api_key=MASTER, max_retries=0)
        deadline = time.monotonic() + 15
        while True:  # heard by polling
            try:
                client.chat.completions.create(
                    model="slowch/gen/2", messages=[{"role": "user", "content": "x"}]
                )
                break
            except openai.NotFoundError:
                assert time.monotonic() < deadline, "the channel was never served"
                time.sleep(0.2)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(
                model="slowch/gen/2?ttft=3", messages=[{"role": "user", "content": "x"}]
            )
        assert caught.value.status_code == 504 and "first token" in caught.value.message
        listed = httpx.get(f"{gw.url}/admin/channels/slowch", headers=ADMIN, timeout=10).json()
        assert listed["timeouts"] == {"first_token": 0.5}
    finally:
        gw.proc.stop()
