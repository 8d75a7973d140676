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

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agents import Recording, agent_gateway, binary, pinned, run_agent, version_of
from support.procs import FakeUpstream, Gateway

pytestmark = pytest.mark.timeout(300)

ALIASES = {
    "claude-echo": "local/echo",
    "claude-via-openai": "fake/echo",
    "claude-via-anthropic": "fakeant/echo",
    "claude-via-gemini": "fakegem/echo",
    "claude-via-responses": "fakeresp/echo",
}


@pytest.fixture(scope="module")
def gateway_for_agent(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    yield from agent_gateway(workdir, fake, ALIASES)


def run_claude(gateway: Gateway, home: Path, prompt: str, model: str, *args: str) -> str:
    """``claude -p`` with a clean environment: its own HOME, a dummy key, no traffic but
    the gateway's (telemetry, updates, error reports off)."""
    env = {
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
    claude = str(binary("claude", "Claude Code"))
    return run_agent("claude", [claude, "-p", prompt, "--model", model, *args], home, env)


def test_the_pinned_version_is_installed() -> None:
    version = version_of(binary("claude", "Claude Code"))
    assert version.startswith(pinned("CLAUDE_CODE_VERSION")), version


@pytest.mark.parametrize("model", list(ALIASES))
def test_claude_code_answers_through_every_upstream(
    gateway_for_agent: Gateway, fake: FakeUpstream, tmp_path: Path, model: str
) -> None:
    made = Recording.since(gateway_for_agent, fake)
    out = run_claude(gateway_for_agent, tmp_path, "tell me the tokenrelay word", model)
    assert "tell me the tokenrelay word" in out  # every upstream here echoes
    seen = made.requests()
    assert seen, "the gateway logged no request from Claude Code"
    assert any("anthropic" in what for what, _ in seen)  # the Messages request(s)
    assert all(status < 400 for _, status in seen), seen
    if ALIASES[model] != "local/echo":
        upstream = made.upstream_paths()
        assert upstream and all(status == 200 for _, status in upstream), upstream


def test_claude_code_sends_what_a_strict_door_refused(
    gateway_for_agent: Gateway, fake: FakeUpstream, tmp_path: Path
) -> None:
    """What Claude Code 2.1 sends reaches an Anthropic upstream as written."""
    made = Recording.since(gateway_for_agent, fake)
    run_claude(gateway_for_agent, tmp_path, "hello upstream", "claude-via-anthropic")
    entry = next(e for e in made.upstream() if e["path"] == "/v1/messages")
    body = entry["body"]
    assert body["model"] == "echo"
    assert any(m.get("role") == "system" for m in body["messages"]), "mid-conversation system"
    assert body["thinking"] == {"type": "adaptive"}
    betas = {k.lower(): v for k, v in entry["headers"].items()}["anthropic-beta"]
    assert "mid-conversation-system-2026-04-07" in betas.split(",")


def test_claude_code_reads_a_file_in_one_tool_round_trip(
    gateway_for_agent: Gateway, tmp_path: Path
) -> None:
    """local/echo asks for Claude Code's Read tool (``/call``); Claude Code reads the file
    and sends its content back as a tool result; the next answer echoes it."""
    notes = tmp_path / "notes.txt"
    notes.write_text("the secret word is pineapple\n")
    made = Recording.since(gateway_for_agent)
    prompt = f'Read my notes.\n/call Read {{"file_path": "{notes}"}}'
    out = run_claude(gateway_for_agent, tmp_path, prompt, "claude-echo", "--allowedTools", "Read")
    assert "the secret word is pineapple" in out
    log = made.log()
    assert "finish=tool_calls" in log and "finish=stop" in log, log
    assert all(status < 400 for _, status in made.requests()), made.requests()


@pytest.mark.parametrize("model", list(ALIASES))
def test_claude_code_context_counts_tokens_without_generating(
    gateway_for_agent: Gateway, fake: FakeUpstream, tmp_path: Path, model: str
) -> None:
    """``/context`` calls ``POST /v1/messages/count_tokens?beta=true``: each is answered
    (no 404, no fallback to a billed ``max_tokens: 1`` generation)."""
    made = Recording.since(gateway_for_agent, fake)
    out = run_claude(gateway_for_agent, tmp_path, "/context", model)
    assert "Tokens" in out, out
    seen = made.requests()
    assert any(what == "http POST /v1/messages/count_tokens" for what, _ in seen), seen
    assert all(status < 400 for _, status in seen), seen
    log = made.log()
    assert " anthropic model=" not in log, "no generation was made"
    counted = {"local/echo": "local", "fake/echo": "estimate", "fakeresp/echo": "estimate"}
    assert f"count={counted.get(ALIASES[model], 'upstream')}" in log
    generations = [
        p for p, _ in made.upstream_paths() if p.endswith(("/messages", "ions", "/responses"))
    ]
    assert generations == []
