"""Real processes for end-to-end tests: the fake upstream and gateways, each a
subprocess listening on a free loopback port, stopped when the test session ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from .net import free_port, wait_listening
from .paths import FIXTURES

UPSTREAM_KEY = "sk-upstream-secret-do-not-leak-0123456789"


@dataclass
class Proc:
    name: str
    port: int
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_process(
    name: str, args: list[str], port: int, workdir: Path, env: dict[str, str] | None = None
) -> Proc:
    log_path = workdir / f"{name}-{port}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - the process writes it for its whole life
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    popen = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    proc = Proc(name, port, popen, log_path)
    try:
        wait_listening(port, 60)  # a loaded 2-core machine can take 20 s to import and bind
    except TimeoutError:
        proc.stop()
        raise RuntimeError(f"{name} did not start:\n{proc.output()}") from None
    return proc


def tokenrelay(*args: str) -> list[str]:
    return [sys.executable, "-m", "tokenrelay.cli", *args]


@dataclass
class FakeUpstream:
    proc: Proc

    @property
    def base_url(self) -> str:
        return self.proc.url

    def log(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.base_url}/_fake/log", timeout=5).json())

    def clear(self) -> None:
        httpx.delete(f"{self.base_url}/_fake/log", timeout=5)

    def per_key(self) -> dict[str, int]:
        """Requests seen per API key, by the key's last 4 characters ("…abcd")."""
        return dict(httpx.get(f"{self.base_url}/_fake/keys", timeout=5).json())

    def find(self, model: str, timeout: float = 2.0) -> dict[str, Any]:
        """The log entry of the request for ``model`` (waits for it to appear)."""
        deadline = time.monotonic() + timeout
        while True:
            for entry in reversed(self.log()):
                body = entry.get("body") or {}
                if isinstance(body, dict) and body.get("model") == model:
                    return entry
                if model in str(entry.get("path", "")):
                    return entry
            if time.monotonic() > deadline:
                raise AssertionError(f"the fake upstream saw no request for {model!r}")
            time.sleep(0.05)


def start_fake(workdir: Path) -> FakeUpstream:
    port = free_port()
    args = tokenrelay("fake-upstream", "--port", str(port))
    if FIXTURES.is_dir():
        args += ["--fixtures", str(FIXTURES)]
    return FakeUpstream(start_process("fake", args, port, workdir))


@dataclass
class Gateway:
    proc: Proc
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.proc.url

    @property
    def base_url(self) -> str:
        return f"{self.proc.url}/v1"


def gateway_config(fake: FakeUpstream, **overrides: Any) -> dict[str, Any]:
    """A gateway config with the fake upstream as four providers, one per upstream wire
    format: ``fake`` (OpenAI), ``fakeant`` (Anthropic), ``fakegem`` (Gemini), ``fakeresp``
    (OpenAI Responses)."""
    key = "${FAKE_UPSTREAM_KEY}"
    config: dict[str, Any] = {
        "env_providers": False,
        "local": {"rate": 200},
        "providers": [
            {
                "name": "fake",
                "protocol": "openai",
                "base_url": f"{fake.base_url}/v1",
                "api_key": key,
                "models": ["gen/5", "*"],
            },
            {
                "name": "fakeant",
                "protocol": "anthropic",
                "base_url": f"{fake.base_url}/v1",
                "api_key": key,
                "models": ["*"],
                "anthropic_betas": ["*"],  # as Anthropic's own API (not the default here)
            },
            {
                "name": "fakegem",
                "protocol": "gemini",
                "base_url": f"{fake.base_url}/v1beta",
                "api_key": key,
                "models": ["*"],
            },
            {
                "name": "fakeresp",
                "protocol": "openai-responses",
                "base_url": f"{fake.base_url}/v1",
                "api_key": key,
                "models": ["*"],
            },
        ],
    }
    config.update(overrides)
    return config


def start_gateway(
    workdir: Path,
    config: dict[str, Any],
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
) -> Gateway:
    port = free_port()
    config = dict(config)
    config.setdefault("database_url", f"sqlite:///{workdir}/gateway-{port}.db")
    config.setdefault("usage", {}).setdefault("spill_dir", str(workdir / f"spool-{port}"))
    path = workdir / f"gateway-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    # one worker unless a test asks for more (--workers): the default with Redis is one
    # per core, and the suite's gateways share two cores with everything else
    full_env = {"FAKE_UPSTREAM_KEY": UPSTREAM_KEY, "TOKENRELAY_WORKERS": "1", **(env or {})}
    command = tokenrelay("serve", "--port", str(port), "--config", str(path), "--log-level", "info")
    return Gateway(start_process("gateway", [*command, *args], port, workdir, full_env), config)


def sse_payloads(raw: bytes) -> list[Any]:
    """The JSON payloads of an OpenAI-wire SSE body (``[DONE]`` kept as a string)."""
    from tokenrelay.sse import SSEDecoder

    out: list[Any] = []
    for event in SSEDecoder().iter([raw]):
        out.append(event.data if event.data == "[DONE]" else json.loads(event.data))
    return out
