"""Gemini CLI itself (``@google/gemini-cli``, pinned in the Makefile and installed into
``.tools/`` by ``make test``), run non-interactively (``gemini -p``) against a real
gateway process: ``GOOGLE_GEMINI_BASE_URL`` at the gateway, a dummy ``GEMINI_API_KEY``,
its own HOME with telemetry, usage statistics and update checks off, no network.

The answer must print through ``local/echo`` and through each upstream protocol of the
fake; one whole tool round trip runs (local/echo asks for the CLI's own ``read_file``
tool with ``/call``, the CLI reads the file and sends its content back as a
``functionResponse``, the next answer echoes it); and no request it makes, to the
gateway or by the gateway to the fake, gets an error status.

Gemini CLI asks for ``gemini-*`` model names: the gateway config aliases each deployment
to such a name, as the README shows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]
GEMINI = ROOT / ".tools" / "node_modules" / ".bin" / "gemini"
PINNED = re.search(r"GEMINI_CLI_VERSION \?= (\S+)", (ROOT / "Makefile").read_text())

ALIASES = {
    "gemini-echo": "local/echo",
    "gemini-via-openai": "fake/echo",
    "gemini-via-anthropic": "fakeant/echo",
    "gemini-via-gemini": "fakegem/echo",
}
SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    "telemetry": {"enabled": False},
    "privacy": {"usageStatisticsEnabled": False},
    "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
}


def gemini_binary() -> Path:
    """The pinned Gemini CLI, or a skip (a failure under CI=true) when it is missing."""
    if GEMINI.exists():
        return GEMINI
    reason = f"Gemini CLI is not installed at {GEMINI} (make agent-tools installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def agent_gateway(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    config = gateway_config(
        fake, models=[{"name": alias, "deployments": [d]} for alias, d in ALIASES.items()]
    )
    gw = start_gateway(workdir, config)
    yield gw
    gw.proc.stop()


def run_gemini(gateway: Gateway, home: Path, prompt: str, model: str) -> str:
    """``gemini -p`` with a clean environment: its own HOME and settings, a dummy key,
    the working directory trusted, no traffic but the gateway's."""
    (home / ".gemini").mkdir(exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(SETTINGS))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GOOGLE_GEMINI_BASE_URL": gateway.url,
        "GEMINI_API_KEY": "dummy-gemini-client-key",
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
        "GEMINI_TELEMETRY_ENABLED": "false",
        "NO_BROWSER": "1",
    }
    done = subprocess.run(
        [str(gemini_binary()), "-p", prompt, "-m", model],
        cwd=home,
        env=env,
        capture_output=True,
        timeout=240,
        check=False,
    )
    out = done.stdout.decode(errors="replace")
    assert done.returncode == 0, f"gemini failed ({done.returncode}):\n{out}\n{done.stderr!r}"
    return out


def statuses(log: str, start: int) -> list[tuple[str, int]]:
    """(what, status) of every request the gateway logged since ``start``."""
    out: list[tuple[str, int]] = []
    for line in log[start:].splitlines():
        found = re.search(r"tokenrelay\.access (.*?) status=(\d+)", line)
        if found is not None:
            out.append((found.group(1), int(found.group(2))))
    return out


def fake_paths(fake: FakeUpstream, start: int) -> list[tuple[str, Any]]:
    return [(f"{e['method']} {e['path']}", e.get("status")) for e in fake.log()[start:]]


def test_the_pinned_version_is_installed() -> None:
    binary = gemini_binary()
    assert PINNED is not None
    version = subprocess.run(
        [str(binary), "--version"], capture_output=True, timeout=60, check=True
    ).stdout.decode()
    assert version.strip() == PINNED.group(1), version


@pytest.mark.parametrize("model", list(ALIASES))
def test_gemini_cli_answers_through_every_upstream(
    agent_gateway: Gateway, fake: FakeUpstream, tmp_path: Path, model: str
) -> None:
    log_at = len(agent_gateway.proc.output())
    fake_at = len(fake.log())
    out = run_gemini(agent_gateway, tmp_path, "tell me the tokenrelay word", model)
    assert "tell me the tokenrelay word" in out  # every upstream here echoes
    seen = statuses(agent_gateway.proc.output(), log_at)
    assert any(f" gemini model={model} " in f" {what} " for what, _ in seen), seen
    assert all(status < 400 for _, status in seen), seen
    if ALIASES[model] != "local/echo":
        upstream = fake_paths(fake, fake_at)
        assert upstream and all(status == 200 for _, status in upstream), upstream


def test_gemini_cli_reaches_a_gemini_upstream_as_written(
    agent_gateway: Gateway, fake: FakeUpstream, tmp_path: Path
) -> None:
    """Same protocol: what the CLI sends (its systemInstruction, tools with
    ``parametersJsonSchema``, thinkingConfig) reaches the Gemini upstream unchanged."""
    fake_at = len(fake.log())
    run_gemini(agent_gateway, tmp_path, "hello upstream", "gemini-via-gemini")
    entry = next(e for e in fake.log()[fake_at:] if "streamGenerateContent" in e["path"])
    assert entry["path"].endswith("/models/echo:streamGenerateContent")
    body = entry["body"]
    assert body["systemInstruction"]["parts"], "the CLI's system prompt"
    names = [d["name"] for t in body.get("tools", []) for d in t.get("functionDeclarations", [])]
    assert "read_file" in names


def test_gemini_cli_reads_a_file_in_one_tool_round_trip(
    agent_gateway: Gateway, tmp_path: Path
) -> None:
    """local/echo asks for the CLI's read_file tool (``/call``); the CLI reads the file
    and sends its content back as a function response; the next answer echoes it."""
    notes = tmp_path / "notes.txt"
    notes.write_text("the secret word is pineapple\n")
    log_at = len(agent_gateway.proc.output())
    prompt = f'Read my notes.\n/call read_file {{"file_path": "{notes}"}}'
    out = run_gemini(agent_gateway, tmp_path, prompt, "gemini-echo")
    assert "the secret word is pineapple" in out
    seen = statuses(agent_gateway.proc.output(), log_at)
    log = agent_gateway.proc.output()[log_at:]
    assert "finish=tool_calls" in log and "finish=stop" in log, log
    assert all(status < 400 for _, status in seen), seen
