"""Codex CLI itself (``@openai/codex``, pinned in the Makefile and installed into
``.tools/`` by ``make test``), run non-interactively (``codex exec``) against a real
gateway process: no network, a ``model_providers`` entry in a temporary ``CODEX_HOME``
whose ``base_url`` is the gateway, ``wire_api = "responses"``.

It answers through ``local/echo`` and through each upstream protocol of the fake; one
whole tool round trip runs (local/echo asks for Codex's shell tool, ``exec_command``,
Codex runs it and sends the output back, the next answer echoes it); every request it
makes is recorded, and none gets a 4xx except one on purpose: with ``supports_websockets``
Codex first tries the Responses WebSocket transport (``GET /v1/responses`` with an
upgrade), which the gateway refuses with a plain 426 so that Codex falls back to HTTPS
at once (``server/app.py``). Codex sends ``store: false``: nothing is kept.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agents import Recording, agent_gateway, binary, pinned, run_agent, version_of
from support.procs import UPSTREAM_KEY, FakeUpstream, Gateway

pytestmark = pytest.mark.timeout(300)

MODELS = ["local/echo", "fake/echo", "fakeant/echo", "fakegem/echo", "fakeresp/echo"]


def codex_binary() -> Path:
    return binary("codex", "Codex")


@pytest.fixture(scope="module")
def gateway_for_agent(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    yield from agent_gateway(workdir, fake)


def codex_home(tmp: Path, base_url: str, model: str, websockets: bool = True) -> Path:
    home = tmp / "codex-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'model = "{model}"\n'
        'model_provider = "relay"\n\n'
        "[model_providers.relay]\n"
        'name = "relay"\n'
        f'base_url = "{base_url}"\n'
        'wire_api = "responses"\n'
        'env_key = "RELAY_KEY"\n'
        f"supports_websockets = {'true' if websockets else 'false'}\n"
    )
    return home


def run_codex(home: Path, cwd: Path, prompt: str, key: str = "sk-dummy-client-key") -> str:
    """``codex exec`` with a clean environment: its own HOME and CODEX_HOME, a dummy key;
    ``--json`` events on stdout."""
    env = {"HOME": str(home), "CODEX_HOME": str(home), "RELAY_KEY": key}
    args = [str(codex_binary()), "exec", "--json", "--skip-git-repo-check", prompt]
    return run_agent("codex", args, cwd, env)


def answers(out: str) -> list[str]:
    """The texts of the agent messages in ``codex exec --json`` output."""
    texts = []
    for line in out.splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        item = event.get("item") or {}
        if event.get("type") == "item.completed" and item.get("type") == "agent_message":
            texts.append(str(item.get("text", "")))
    return texts


def test_the_pinned_version_is_installed() -> None:
    version = version_of(codex_binary())
    assert version.endswith(pinned("CODEX_VERSION")), version


@pytest.mark.parametrize("model", MODELS)
def test_codex_answers_through_every_upstream(
    gateway_for_agent: Gateway, fake: FakeUpstream, tmp_path: Path, model: str
) -> None:
    made = Recording.since(gateway_for_agent, fake)
    home = codex_home(tmp_path, gateway_for_agent.base_url, model)
    out = run_codex(home, tmp_path, "tell me the tokenrelay word")
    assert any("tell me the tokenrelay word" in a for a in answers(out)), out
    seen = made.requests()
    probes = [s for what, s in seen if "WEBSOCKET /v1/responses" in what]
    assert probes == [426], seen  # the deliberate refusal, once: Codex fell back at once
    others = [(what, s) for what, s in seen if "WEBSOCKET" not in what]
    assert any("openai-responses" in what for what, _ in others), others
    assert all(status < 400 for _, status in others), others
    if model != "local/echo":
        upstream = made.upstream_paths()
        assert upstream and all(status == 200 for _, status in upstream), upstream


def test_codex_runs_its_shell_tool_in_one_round_trip(
    gateway_for_agent: Gateway, tmp_path: Path
) -> None:
    """local/echo asks for ``exec_command`` (the shell tool Codex 0.171 offers); Codex
    runs it and sends the output back as a ``function_call_output``; the next answer
    (local/echo echoes a tool result) carries it."""
    (tmp_path / "notes.txt").write_text("the secret word is pineapple\n")
    made = Recording.since(gateway_for_agent)
    home = codex_home(tmp_path, gateway_for_agent.base_url, "local/echo")
    prompt = 'Read my notes.\n/call exec_command {"cmd": "cat notes.txt"}'
    out = run_codex(home, tmp_path, prompt)
    assert any("pineapple" in a for a in answers(out)), out
    log = made.log()
    assert "finish=tool_calls" in log and "finish=stop" in log, log
    others = [(w, s) for w, s in made.requests() if "WEBSOCKET" not in w]
    assert all(status < 400 for _, status in others), others


def _first_answer_seconds(home: Path, cwd: Path, key: str) -> float:
    """Seconds from starting ``codex exec --json`` to its first agent message line."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    env.update({"CODEX_HOME": str(home), "RELAY_KEY": key})
    started = time.perf_counter()
    args = [str(codex_binary()), "exec", "--json", "--skip-git-repo-check", "say ttft"]
    with subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if b'"agent_message"' in line:
                elapsed = time.perf_counter() - started
                break
        else:
            pytest.fail("codex gave no answer")
        proc.wait(timeout=60)
    return elapsed


def test_codex_time_to_first_answer_through_the_gateway_and_direct(
    gateway_for_agent: Gateway, fake: FakeUpstream, tmp_path: Path
) -> None:
    """The same ``codex exec`` through the gateway (``fakeresp/echo``, WebSocket probe
    included) and straight at the fake's Responses wire (no probe: the fake is plain
    HTTP). Printed for bench/RESULTS.md; bounded only far from the measured values."""
    via = codex_home(tmp_path / "via", gateway_for_agent.base_url, "fakeresp/echo")
    plain = codex_home(tmp_path / "plain", gateway_for_agent.base_url, "fakeresp/echo", False)
    direct = codex_home(tmp_path / "direct", f"{fake.base_url}/v1", "echo", websockets=False)
    runs: dict[str, list[float]] = {"gateway": [], "gateway_no_ws": [], "direct": []}
    for _ in range(5):
        runs["gateway"].append(_first_answer_seconds(via, tmp_path, "sk-client"))
        runs["gateway_no_ws"].append(_first_answer_seconds(plain, tmp_path, "sk-client"))
        runs["direct"].append(_first_answer_seconds(direct, tmp_path, UPSTREAM_KEY))
    medians = {k: statistics.median(v) for k, v in runs.items()}
    print(f"codex first answer, median of 5: {medians}")
    assert medians["gateway"] < medians["direct"] + 5.0  # five reconnects cost ~7 s
