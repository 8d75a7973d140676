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
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agents import Recording, agent_gateway, binary, pinned, run_agent, version_of
from support.procs import FakeUpstream, Gateway

pytestmark = pytest.mark.timeout(300)

ALIASES = {
    "gemini-echo": "local/echo",
    "gemini-via-openai": "fake/echo",
    "gemini-via-anthropic": "fakeant/echo",
    "gemini-via-gemini": "fakegem/echo",
    "gemini-via-responses": "fakeresp/echo",
}
SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    "telemetry": {"enabled": False},
    "privacy": {"usageStatisticsEnabled": False},
    "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
}


@pytest.fixture(scope="module")
def gateway_for_agent(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    yield from agent_gateway(workdir, fake, ALIASES)


def run_gemini(gateway: Gateway, home: Path, prompt: str, model: str) -> str:
    """``gemini -p`` with a clean environment: its own HOME and settings, a dummy key,
    the working directory trusted, no traffic but the gateway's."""
    (home / ".gemini").mkdir(exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(SETTINGS))
    env = {
        "HOME": str(home),
        "GOOGLE_GEMINI_BASE_URL": gateway.url,
        "GEMINI_API_KEY": "dummy-gemini-client-key",
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
        "GEMINI_TELEMETRY_ENABLED": "false",
        "NO_BROWSER": "1",
    }
    gemini = str(binary("gemini", "Gemini CLI"))
    return run_agent("gemini", [gemini, "-p", prompt, "-m", model], home, env)


def test_the_pinned_version_is_installed() -> None:
    version = version_of(binary("gemini", "Gemini CLI"))
    assert version == pinned("GEMINI_CLI_VERSION"), version


@pytest.mark.parametrize("model", list(ALIASES))
def test_gemini_cli_answers_through_every_upstream(
    gateway_for_agent: Gateway, fake: FakeUpstream, tmp_path: Path, model: str
) -> None:
    made = Recording.since(gateway_for_agent, fake)
    out = run_gemini(gateway_for_agent, tmp_path, "tell me the tokenrelay word", model)
    assert "tell me the tokenrelay word" in out  # every upstream here echoes
    seen = made.requests()
    assert any(f" gemini model={model} " in f" {what} " for what, _ in seen), seen
    assert all(status < 400 for _, status in seen), seen
    if ALIASES[model] != "local/echo":
        upstream = made.upstream_paths()
        assert upstream and all(status == 200 for _, status in upstream), upstream


def test_gemini_cli_reaches_a_gemini_upstream_as_written(
    gateway_for_agent: Gateway, fake: FakeUpstream, tmp_path: Path
) -> None:
    """Same protocol: what the CLI sends (its systemInstruction, tools with
    ``parametersJsonSchema``, thinkingConfig) reaches the Gemini upstream unchanged."""
    made = Recording.since(gateway_for_agent, fake)
    run_gemini(gateway_for_agent, tmp_path, "hello upstream", "gemini-via-gemini")
    entry = next(e for e in made.upstream() if "streamGenerateContent" in e["path"])
    assert entry["path"].endswith("/models/echo:streamGenerateContent")
    body = entry["body"]
    assert body["systemInstruction"]["parts"], "the CLI's system prompt"
    names = [d["name"] for t in body.get("tools", []) for d in t.get("functionDeclarations", [])]
    assert "read_file" in names


def test_gemini_cli_reads_a_file_in_one_tool_round_trip(
    gateway_for_agent: Gateway, tmp_path: Path
) -> None:
    """local/echo asks for the CLI's read_file tool (``/call``); the CLI reads the file
    and sends its content back as a function response; the next answer echoes it."""
    notes = tmp_path / "notes.txt"
    notes.write_text("the secret word is pineapple\n")
    made = Recording.since(gateway_for_agent)
    prompt = f'Read my notes.\n/call read_file {{"file_path": "{notes}"}}'
    out = run_gemini(gateway_for_agent, tmp_path, prompt, "gemini-echo")
    assert "the secret word is pineapple" in out
    log = made.log()
    assert "finish=tool_calls" in log and "finish=stop" in log, log
    assert all(status < 400 for _, status in made.requests()), made.requests()
