"""The built image, run as two replicas sharing a real Redis and PostgreSQL: a stream goes
through one, that replica is restarted (SIGTERM, drain, start again) while the stream is
produced, and the client resumes through the other and then through the restarted one.

Opt-in, also under CI=true: building an image needs a base image (a registry, or
scripts/container-base.sh with debootstrap) and minutes of a 2-core machine, so CI checks
the image's command outside a container instead (test_image_entrypoint.py).
Run it with scripts/container-smoke.sh, which builds the image and sets
TOKENRELAY_CONTAINER_IMAGE (PODMAN and PODMAN_RUN_ARGS carry this machine's podman flags).
Containers share the host's network and listen on loopback only."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from support.net import free_port
from support.services import shared_postgres, shared_redis
from support.usage_rows import rows, wait_for_rows

from tokenrelay.sse import SSEDecoder

IMAGE = os.environ.get("TOKENRELAY_CONTAINER_IMAGE", "")
MASTER = "sk-master-container-smoke-0123456789"
WORDS = " ".join(f"w{i}" for i in range(40))
BODY = {"model": "local/echo", "stream": True, "messages": [{"role": "user", "content": WORDS}]}
AUTH = {"Authorization": f"Bearer {MASTER}"}

pytestmark = pytest.mark.skipif(
    not IMAGE, reason="opt-in: scripts/container-smoke.sh builds the image and runs this"
)


def podman(*args: str, timeout: float = 120) -> str:
    """Its output, stderr included (``podman logs`` gives a container's stderr there)."""
    cmd = [*shlex.split(os.environ.get("PODMAN", "podman")), *args]
    done = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise AssertionError(f"{shlex.join(cmd)}: {done.returncode}\n{done.stdout}")
    return done.stdout.strip()


class Replica:
    def __init__(self, name: str, env: dict[str, str], config: Path) -> None:
        self.name = name
        self.port = free_port()
        flags = [f"--env={k}={v}" for k, v in env.items()]
        podman(
            "run", "--detach", f"--name={name}", "--network=host",
            *shlex.split(os.environ.get("PODMAN_RUN_ARGS", "")),
            *flags, "--env=TOKENRELAY_HOST=127.0.0.1", f"--env=TOKENRELAY_PORT={self.port}",
            "--env=TOKENRELAY_CONFIG=/etc/tokenrelay/tokenrelay.yaml",
            f"--volume={config}:/etc/tokenrelay/tokenrelay.yaml:ro",
            IMAGE,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def wait_healthy(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).is_success:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not healthy:\n{podman('logs', self.name)}")
            time.sleep(0.2)


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[Replica, Replica, str]]:
    """Two replicas of the image and the PostgreSQL database they share."""
    database = shared_postgres().new_database()
    config = tmp_path / "tokenrelay.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "local": {"rate": 10},
                "streams": {"grace": 30, "retention": 120},
                # below redis-py 8's 5 s socket timeout: a remote reader's XREAD blocks
                # for keepalive_interval and died at 5 s (fixed on branch a-redis, 4942994)
                "keepalive_interval": 1,
            }
        )
    )
    config.chmod(0o644)  # read by the image's non-root user
    env = {
        "TOKENRELAY_MASTER_KEY": MASTER,
        "TOKENRELAY_REDIS_URL": shared_redis().url,
        "TOKENRELAY_DATABASE_URL": database,
    }
    tag = secrets.token_hex(4)
    made: list[Replica] = []
    try:
        made.append(Replica(f"tokenrelay-smoke-a-{tag}", env, config))
        made.append(Replica(f"tokenrelay-smoke-b-{tag}", env, config))
        for r in made:
            r.wait_healthy()
        yield made[0], made[1], database
    finally:
        for r in made:
            print(f"--- {r.name}\n{podman('logs', r.name, timeout=30)}")
            podman("rm", "--force", "--time=5", r.name)


def frames(response: httpx.Response, limit: int | None = None) -> list[tuple[str, Any]]:
    decoder = SSEDecoder()
    out: list[tuple[str, Any]] = []
    for chunk in response.iter_raw():
        for event in decoder.feed(chunk):
            data = event.data if event.data == "[DONE]" else json.loads(event.data)
            out.append((str(event.id), data))
            if limit is not None and len(out) >= limit:
                return out
    return out


def text_of(got: list[tuple[str, Any]]) -> str:
    return "".join(
        p["choices"][0]["delta"].get("content") or ""
        for _, p in got
        if isinstance(p, dict) and p.get("choices")
    )


def resume(replica: Replica, stream_id: str, last: str) -> list[tuple[str, Any]]:
    headers = {**AUTH, "Last-Event-ID": last}
    url = f"{replica.url}/streams/{stream_id}"
    with httpx.stream("GET", url, headers=headers, timeout=60) as r:
        assert r.status_code == 200, r.read()
        return frames(r)


def test_a_stream_resumes_across_a_replica_restart(
    replicas: tuple[Replica, Replica, str],
) -> None:
    a, b, database = replicas
    podman("healthcheck", "run", a.name)  # exits 0 only when the HEALTHCHECK passes
    url = f"{a.url}/chat/completions"
    with httpx.stream("POST", url, json=BODY, headers=AUTH, timeout=30) as r:
        assert r.status_code == 200
        stream_id, request_id = r.headers["x-stream-id"], r.headers["x-request-id"]
        first = frames(r, 4)  # then the client drops

    # SIGTERM: A stops accepting and drains (the stream, ~4 s, finishes within
    # shutdown_drain), then starts again; meanwhile the client follows through B.
    restart = subprocess.Popen(
        [*shlex.split(os.environ.get("PODMAN", "podman")), "restart", "--time=45", a.name],
        stdout=subprocess.DEVNULL,
    )
    rest = resume(b, stream_id, first[-1][0])
    got = first + rest
    seqs = [int(i.rpartition(":")[2]) for i, _ in got]
    assert seqs == list(range(1, len(got) + 1)), "no gap, no duplicate across replicas"
    assert got[-1][1] == "[DONE]"
    assert text_of(got) == WORDS

    assert restart.wait(120) == 0
    a.wait_healthy()
    again = resume(a, stream_id, first[-1][0])
    assert again == rest, "the restarted replica serves the same frames from Redis"

    wait_for_rows(database, {request_id}, timeout=30)
    mine = [row for row in rows(database) if row["request_id"] == request_id]
    assert len(mine) == 1, "one usage row however often the stream was resumed"
    assert mine[0]["output_tokens"] == 40
