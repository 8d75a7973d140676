"""Claude Code itself (``@anthropic-ai/claude-code``, pinned in the Makefile and installed
into ``.tools/`` by ``make test``), run non-interactively (``claude -p``) against a real
gateway process: no network, no ``--bare``, ``ANTHROPIC_BASE_URL`` at the gateway.

It sends what it sends in late 2026: a ``system`` message inside ``messages``, adaptive
thinking, ``output_config.effort``, ``context_management``, ``cache_control`` and a
list of beta flags. The answer must print through ``local/echo`` and through each
upstream protocol of the fake; one whole tool round trip runs (the model asks for
Claude Code's ``Read`` tool, Claude Code reads a file and sends its content back, the
next answer echoes it); and no request it makes, to the gateway or by the gateway to the
fake, gets an error status.

Claude Code keeps only ``/v1/models`` ids with "claude" in them: the gateway config
aliases each deployment to such a name, as the README shows.
"""

from __future__ import annotations

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
CLAUDE = ROOT / ".tools" / "node_modules" / ".bin" / "claude"
PINNED = re.search(r"CLAUDE_CODE_VERSION \?= (\S+)", (ROOT / "Makefile").read_text())

ALIASES = {
    "claude-echo": "local/echo",
    "claude-via-openai": "fake/echo",
    "claude-via-anthropic": "fakeant/echo",
    "claude-via-gemini": "fakegem/echo",
}


def claude_binary() -> Path:
    """The pinned Claude Code, or a skip (a failure under CI=true) when it is missing."""
    if CLAUDE.exists():
        return CLAUDE
    reason = f"Claude Code is not installed at {CLAUDE} (make agent-tools installs it)"
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


def run_claude(gateway: Gateway, home: Path, prompt: str, model: str, *args: str) -> str:
    """``claude -p`` with a clean environment: its own HOME, a dummy key, no traffic but
    the gateway's (telemetry, updates, error reports off)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": gateway.url,
        "ANTHROPIC_API_KEY": "sk-dummy-client-key",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "ANTHROPIC_SMALL_FAST_MODEL": model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
    }
    done = subprocess.run(
        [str(claude_binary()), "-p", prompt, "--model", model, *args],
        cwd=home,
        env=env,
        capture_output=True,
        timeout=240,
        check=False,
    )
    out = done.stdout.decode(errors="replace")
    assert done.returncode == 0, f"claude failed ({done.returncode}):\n{out}\n{done.stderr!r}"
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
    binary = claude_binary()
    assert PINNED is not None
    version = subprocess.run(
        [str(binary), "--version"], capture_output=True, timeout=60, check=True
    ).stdout.decode()
    assert version.startswith(PINNED.group(1)), version


@pytest.mark.parametrize("model", list(ALIASES))
def test_claude_code_answers_through_every_upstream(
    agent_gateway: Gateway, fake: FakeUpstream, tmp_path: Path, model: str
) -> None:
    log_at = len(agent_gateway.proc.output())
    fake_at = len(fake.log())
    out = run_claude(agent_gateway, tmp_path, "tell me the tokenrelay word", model)
    assert "tell me the tokenrelay word" in out  # every upstream here echoes
    seen = statuses(agent_gateway.proc.output(), log_at)
    assert seen, "the gateway logged no request from Claude Code"
    assert any("anthropic" in what for what, _ in seen)  # the Messages request(s)
    assert all(status < 400 for _, status in seen), seen
    if ALIASES[model] != "local/echo":
        upstream = fake_paths(fake, fake_at)
        assert upstream and all(status == 200 for _, status in upstream), upstream


def test_claude_code_sends_what_a_strict_door_refused(
    agent_gateway: Gateway, fake: FakeUpstream, tmp_path: Path
) -> None:
    """What Claude Code 2.1 sends reaches an Anthropic upstream as written."""
    fake_at = len(fake.log())
    run_claude(agent_gateway, tmp_path, "hello upstream", "claude-via-anthropic")
    entry = next(e for e in fake.log()[fake_at:] if e["path"] == "/v1/messages")
    body = entry["body"]
    assert body["model"] == "echo"
    assert any(m.get("role") == "system" for m in body["messages"]), "mid-conversation system"
    assert body["thinking"] == {"type": "adaptive"}
    betas = {k.lower(): v for k, v in entry["headers"].items()}["anthropic-beta"]
    assert "mid-conversation-system-2026-04-07" in betas.split(",")


def test_claude_code_reads_a_file_in_one_tool_round_trip(
    agent_gateway: Gateway, tmp_path: Path
) -> None:
    """local/echo asks for Claude Code's Read tool (``/call``); Claude Code reads the file
    and sends its content back as a tool result; the next answer echoes it."""
    notes = tmp_path / "notes.txt"
    notes.write_text("the secret word is pineapple\n")
    log_at = len(agent_gateway.proc.output())
    prompt = f'Read my notes.\n/call Read {{"file_path": "{notes}"}}'
    out = run_claude(agent_gateway, tmp_path, prompt, "claude-echo", "--allowedTools", "Read")
    assert "the secret word is pineapple" in out
    seen = statuses(agent_gateway.proc.output(), log_at)
    log = agent_gateway.proc.output()[log_at:]
    assert "finish=tool_calls" in log and "finish=stop" in log, log
    assert all(status < 400 for _, status in seen), seen


@pytest.mark.parametrize("model", list(ALIASES))
def test_claude_code_context_counts_tokens_without_generating(
    agent_gateway: Gateway, fake: FakeUpstream, tmp_path: Path, model: str
) -> None:
    """``/context`` calls ``POST /v1/messages/count_tokens?beta=true``: each is answered
    (no 404, no fallback to a billed ``max_tokens: 1`` generation)."""
    log_at = len(agent_gateway.proc.output())
    fake_at = len(fake.log())
    out = run_claude(agent_gateway, tmp_path, "/context", model)
    assert "Tokens" in out, out
    seen = statuses(agent_gateway.proc.output(), log_at)
    assert any(what == "http POST /v1/messages/count_tokens" for what, _ in seen), seen
    assert all(status < 400 for _, status in seen), seen
    log = agent_gateway.proc.output()[log_at:]
    assert " anthropic model=" not in log, "no generation was made"
    source = {"local/echo": "local", "fake/echo": "estimate"}.get(ALIASES[model], "upstream")
    assert f"count={source}" in log
    generations = [p for p, _ in fake_paths(fake, fake_at) if p.endswith(("/messages", "ions"))]
    assert generations == []
