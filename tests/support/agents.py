"""What the coding-agent end-to-end tests share (``test_claude_code_e2e.py``,
``test_gemini_cli_e2e.py``, ``test_codex_e2e.py``): the pinned agents installed into
``.tools/`` by ``make agent-tools``, a gateway process for them, one non-interactive run
of an agent with a clean environment (its own HOME, a dummy key, nothing but the
gateway to talk to), and the requests a run made, as the gateway logged them and as the
fake upstream saw them.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .procs import FakeUpstream, Gateway, gateway_config, start_gateway

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "node_modules" / ".bin"
RUN_TIMEOUT = 240  # seconds one agent run may take on a loaded machine


def pinned(variable: str) -> str:
    """The version the Makefile pins (``CLAUDE_CODE_VERSION ?= 2.1.197``)."""
    found = re.search(rf"{variable} \?= (\S+)", (ROOT / "Makefile").read_text())
    assert found is not None, f"the Makefile pins no {variable}"
    return found.group(1)


def binary(name: str, label: str) -> Path:
    """The installed agent ``name``, or a skip (a failure under CI=true) when missing."""
    path = TOOLS / name
    if path.exists():
        return path
    reason = f"{label} is not installed at {path} (make agent-tools installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def version_of(path: Path) -> str:
    done = subprocess.run([str(path), "--version"], capture_output=True, timeout=60, check=True)
    return done.stdout.decode().strip()


def agent_gateway(
    workdir: Path, fake: FakeUpstream, aliases: dict[str, str] | None = None
) -> Iterator[Gateway]:
    """A gateway with the fake upstream's four providers and ``aliases`` (the model names
    an agent accepts, each for one deployment); for a module fixture to ``yield from``."""
    models = [{"name": alias, "deployments": [d]} for alias, d in (aliases or {}).items()]
    overrides: dict[str, Any] = {"models": models} if models else {}
    gw = start_gateway(workdir, gateway_config(fake, **overrides))
    yield gw
    gw.proc.stop()


def run_agent(
    label: str, args: list[str], cwd: Path, env: dict[str, str], stdin: bytes | None = None
) -> str:
    """One run of an agent with ``env`` as its whole environment (plus ``PATH``): its
    stdout; a failing exit fails the test with what it printed."""
    done = subprocess.run(
        args,
        cwd=cwd,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        timeout=RUN_TIMEOUT,
        check=False,
        input=stdin,
    )
    out = done.stdout.decode(errors="replace")
    assert done.returncode == 0, f"{label} failed ({done.returncode}):\n{out}\n{done.stderr!r}"
    return out


_ACCESS = re.compile(r"tokenrelay\.access (.*?) status=(\d+)")


def statuses(log: str) -> list[tuple[str, int]]:
    """(what, status) of every request in a piece of the gateway's log: the chat routes'
    exchange line (``req_… openai-responses model=…``), ``http METHOD /path`` for the
    others."""
    return [(m.group(1), int(m.group(2))) for m in _ACCESS.finditer(log)]


@dataclass
class Recording:
    """The requests made from now on: ``since(gateway, fake)`` marks where the gateway's
    log and the fake's request log stand, then ``log``, ``requests`` and ``upstream``
    give what came after the mark."""

    gateway: Gateway
    fake: FakeUpstream | None = None
    log_at: int = 0
    fake_at: int = 0

    @classmethod
    def since(cls, gateway: Gateway, fake: FakeUpstream | None = None) -> Recording:
        fake_at = len(fake.log()) if fake is not None else 0
        return cls(gateway, fake, len(gateway.proc.output()), fake_at)

    def log(self) -> str:
        """The gateway's log since the mark."""
        return self.gateway.proc.output()[self.log_at :]

    def requests(self) -> list[tuple[str, int]]:
        """(what, status) of every request the gateway logged since the mark."""
        return statuses(self.log())

    def upstream(self) -> list[dict[str, Any]]:
        """The fake's log entries since the mark (method, path, body, headers, status)."""
        assert self.fake is not None
        return self.fake.log()[self.fake_at :]

    def upstream_paths(self) -> list[tuple[str, Any]]:
        """(``METHOD /path``, status) of every request the fake saw since the mark."""
        return [(f"{e['method']} {e['path']}", e.get("status")) for e in self.upstream()]
