"""The image's command, run outside a container exactly as the Dockerfile says (its ENV,
ENTRYPOINT, CMD, working directory and HEALTHCHECK), so CI checks what the image runs
without building it. The container itself is smoke-tested by test_container_smoke.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from openai import OpenAI
from support.image import ImageSpec, read
from support.net import free_port, wait_listening

MASTER = "sk-master-image-test-0123456789"


@pytest.fixture(scope="module")
def spec() -> ImageSpec:
    return read()


def entrypoint(spec: ImageSpec) -> list[str]:
    """The ENTRYPOINT from this environment's bin directory (the image's is on PATH)."""
    assert spec.entrypoint == ["tokenrelay"]
    script = Path(sys.executable).parent / "tokenrelay"
    first = [str(script)] if script.exists() else [sys.executable, "-m", "tokenrelay.cli"]
    return [*first, *spec.cmd]


def image_env(spec: ImageSpec, **overrides: str) -> dict[str, str]:
    """The image's ENV over a clean environment: nothing of this shell's leaks in."""
    env = {k: v for k, v in spec.env.items() if k != "PATH"}
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    env["HOME"] = os.environ.get("HOME", "/tmp")
    env.update(overrides)
    return env


def test_the_image_keeps_make_serves_defaults_safely(spec: ImageSpec) -> None:
    assert spec.cmd == ["serve"], "no flags: the embedded configuration, as make serve"
    assert spec.env["TOKENRELAY_PORT"] == "8000"
    assert spec.env["TOKENRELAY_HOST"] == "0.0.0.0", "reachable from outside the container"
    assert spec.user and spec.user != "root"
    assert spec.workdir in spec.volumes, "the SQLite file and spool live on the volume"
    assert spec.stopsignal == "SIGTERM"


def test_without_a_master_key_the_image_refuses_to_serve(spec: ImageSpec, tmp_path: Path) -> None:
    """The image listens on every interface, so open mode would expose the upstream keys;
    the check runs before anything binds."""
    done = subprocess.run(
        entrypoint(spec),
        env=image_env(spec),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "refusing to listen on 0.0.0.0 without a master key" in done.stderr


def test_the_image_command_streams_and_passes_its_health_check(
    spec: ImageSpec, tmp_path: Path
) -> None:
    port = free_port()
    env = image_env(
        spec, TOKENRELAY_HOST="127.0.0.1", TOKENRELAY_PORT=str(port), TOKENRELAY_MASTER_KEY=MASTER
    )
    log = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115 - the process writes it
    proc = subprocess.Popen(entrypoint(spec), env=env, cwd=tmp_path, stdout=log, stderr=log)
    try:
        wait_listening(port, 30)
        assert spec.healthcheck[0] == "python3"
        health = subprocess.run(
            [sys.executable, *spec.healthcheck[1:]], env=env, timeout=30, check=False
        )
        assert health.returncode == 0, "the HEALTHCHECK asks the port the gateway serves"

        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=MASTER)
        stream = client.chat.completions.create(
            model="local/echo",
            messages=[{"role": "user", "content": "hello from the image"}],
            stream=True,
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "hello from the image"
        assert (tmp_path / "tokenrelay.db").exists(), "SQLite in the working directory"
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
    output = (tmp_path / "gateway.log").read_text()
    # uvicorn re-raises SIGTERM after its shutdown, so the status is the signal's (143).
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete." in output
    health = subprocess.run(
        [sys.executable, *spec.healthcheck[1:]], env=env, capture_output=True, timeout=30
    )
    assert health.returncode != 0, "a stopped gateway fails the health check"
