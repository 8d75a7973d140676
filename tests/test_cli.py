"""The ``tokenrelay`` command against a real gateway: ``chat`` streams the reply to the
terminal as it is produced, ``--no-stream``, ``models``, and errors on stderr."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway, tokenrelay


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(tokenrelay(*args), capture_output=True, text=True, timeout=60)


def test_chat_prints_the_reply(gateway: Gateway) -> None:
    result = run("chat", "--base-url", gateway.base_url, "-m", "local/echo", "hello 世界 again")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello 世界 again\n"


def test_chat_no_stream(gateway: Gateway) -> None:
    result = run("chat", "--base-url", gateway.base_url, "--no-stream", "--api-key", "k", "one two")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "one two\n"


def test_models_lists_ids(gateway: Gateway) -> None:
    result = run("models", "--base-url", gateway.base_url)
    assert result.returncode == 0
    assert "local/echo" in result.stdout.split()


def test_chat_error_goes_to_stderr(gateway: Gateway) -> None:
    result = run("chat", "--base-url", gateway.base_url, "-m", "nobody/none", "x")
    assert result.returncode == 1
    assert "404" in result.stderr and "nobody/none" in result.stderr
    assert result.stdout == ""


def test_chat_unreachable_gateway() -> None:
    result = run("chat", "--base-url", "http://127.0.0.1:9/v1", "x")
    assert result.returncode == 1
    assert "cannot reach" in result.stderr


@pytest.fixture(scope="module")
def slow_gateway(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    gw = start_gateway(workdir, gateway_config(fake, local={"rate": 10}))
    yield gw
    gw.proc.stop()


def test_chat_streams_token_by_token(slow_gateway: Gateway) -> None:
    """At 10 words a second, the first words are on stdout long before the last."""
    words = [f"w{i}" for i in range(20)]
    proc = subprocess.Popen(
        tokenrelay("chat", "--base-url", slow_gateway.base_url, " ".join(words)),
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    start = time.monotonic()
    first = proc.stdout.read(2)
    first_at = time.monotonic() - start
    still_running = proc.poll() is None
    rest = proc.stdout.read()
    proc.wait(30)
    assert (first + rest).decode() == " ".join(words) + "\n"
    assert first == b"w0"
    assert still_running, f"the first token came only at the end ({first_at:.2f}s)"
