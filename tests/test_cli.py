"""``tokenrelay models`` against a real gateway. The ``chat`` command is tested in
``test_chat_cli.py``."""

from __future__ import annotations

import subprocess

from support.procs import Gateway, tokenrelay


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(tokenrelay(*args), capture_output=True, text=True, timeout=60)


def test_models_lists_ids(gateway: Gateway) -> None:
    result = run("models", "--base-url", gateway.base_url)
    assert result.returncode == 0
    assert "local/echo" in result.stdout.split()


def test_models_unreachable_gateway() -> None:
    result = run("models", "--base-url", "http://127.0.0.1:9/v1")
    assert result.returncode == 1
    assert "cannot reach" in result.stderr
