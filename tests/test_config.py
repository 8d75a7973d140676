"""Configuration: YAML on top of embedded defaults, ${ENV} secrets, providers found in
the environment, and a bad file that fails at start naming the field."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support.procs import tokenrelay

from tokenrelay.config import ConfigError, load, parse


def test_embedded_defaults_need_nothing() -> None:
    config = parse({}, env={})
    assert config.providers == []
    assert config.local.enabled
    assert config.keepalive_interval > 0


def test_secrets_come_from_the_environment() -> None:
    data = {
        "providers": [
            {
                "name": "myvllm",
                "base_url": "http://127.0.0.1:9000/v1",
                "api_key": "${MYVLLM_KEY}",
                "models": ["llama-3.1-8b"],
                "headers": {"X-Org": "${ORG:-acme}"},
            }
        ]
    }
    config = parse(data, env={"MYVLLM_KEY": "sk-vllm"})
    (provider,) = config.providers
    assert provider.api_key == "sk-vllm"
    assert provider.headers == {"X-Org": "acme"}
    assert provider.protocol == "openai"


def test_a_missing_variable_names_the_field() -> None:
    data = {"providers": [{"name": "p", "base_url": "http://x/v1", "api_key": "${NOPE}"}]}
    with pytest.raises(
        ConfigError, match=r"providers\[0\]\.api_key: environment variable NOPE is not set"
    ):
        parse(data, env={})


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"providers": [{"name": 5, "base_url": "http://x"}]}, r"\$\.providers\[0\]\.name"),
        ({"providers": [{"name": "a"}]}, r"base_url"),
        ({"providers": [{"name": "a", "base_url": "ftp://x"}]}, r"providers\[0\]\.base_url"),
        ({"providers": [{"name": "a", "base_url": "http://x", "protocol": "soap"}]}, r"protocol"),
        ({"providers": [{"name": "a", "base_url": "http://x", "colour": 1}]}, r"colour"),
        ({"providers": [{"name": "a b", "base_url": "http://x"}]}, r"providers\[0\]\.name"),
        ({"providers": [{"name": "local", "base_url": "http://x"}]}, r"reserved"),
        ({"keepalive_interval": "soon"}, r"keepalive_interval"),
    ],
)
def test_a_bad_field_is_named(data: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError, match=where):
        parse(data, env={})


def test_providers_found_by_their_usual_key_variables() -> None:
    config = parse({}, env={"OPENAI_API_KEY": "sk-o", "DEEPSEEK_API_KEY": "sk-d", "UNRELATED": "x"})
    by_name = {p.name: p for p in config.providers}
    assert set(by_name) == {"openai", "deepseek"}
    assert by_name["openai"].api_key == "sk-o"
    assert "gpt-4o-mini" in by_name["openai"].models and "*" in by_name["openai"].models
    assert by_name["deepseek"].base_url.startswith("https://api.deepseek.com")
    assert parse({"env_providers": False}, env={"OPENAI_API_KEY": "sk-o"}).providers == []


def test_base_url_override_from_the_environment() -> None:
    config = parse({}, env={"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "http://127.0.0.1:1/v1"})
    assert config.providers[0].base_url == "http://127.0.0.1:1/v1"


def test_load_reads_the_file_named_by_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("keepalive_interval: 2.5\n")
    assert load(env={"TOKENRELAY_CONFIG": str(path)}).keepalive_interval == 2.5
    with pytest.raises(ConfigError, match="not valid YAML"):
        path.write_text("providers: [\n")
        load(path, env={})


def test_serve_refuses_a_bad_file_at_start(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("providers:\n  - name: x\n    base_url: http://127.0.0.1:9/v1\n    models: 7\n")
    run = subprocess.run(
        tokenrelay("serve", "--config", str(path), "--port", "1"), capture_output=True, timeout=30
    )
    assert run.returncode == 2
    assert b"$.providers[0].models" in run.stderr


def test_anthropic_and_gemini_keys_bring_their_models() -> None:
    env = {"ANTHROPIC_API_KEY": "sk-ant", "GOOGLE_API_KEY": "g-key"}
    by_name = {p.name: p for p in parse({}, env=env).providers}
    assert by_name["anthropic"].protocol == "anthropic"
    assert "claude-sonnet-4-5" in by_name["anthropic"].models
    assert by_name["gemini"].protocol == "gemini" and by_name["gemini"].api_key == "g-key"
    assert "gemini-2.5-flash" in by_name["gemini"].models


def test_env_models_are_listed_for_both_apis(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from tokenrelay.server.app import create_app

    env = {"ANTHROPIC_API_KEY": "sk-ant", "GEMINI_API_KEY": "g"}
    app = create_app(parse({"database_url": f"sqlite:///{tmp_path}/t.db"}, env=env))
    with TestClient(app, base_url="http://localhost") as client:  # type: ignore[arg-type]
        openai_ids = {m["id"] for m in client.get("/v1/models").json()["data"]}
        anthropic_ids = {m["id"] for m in client.get("/anthropic/v1/models").json()["data"]}
    for ids in (openai_ids, anthropic_ids):
        assert {"anthropic/claude-sonnet-4-5", "gemini/gemini-2.5-flash", "local/echo"} <= ids


def test_open_mode_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/t.db"
    run = subprocess.run(
        tokenrelay("serve", "--host", "0.0.0.0", "--port", "1", "--database-url", db),
        capture_output=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "TOKENRELAY_MASTER_KEY"},
    )
    assert run.returncode == 2
    assert b"without a master key" in run.stderr and b"--insecure-no-auth" in run.stderr


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90.0), ("45s", 45.0), ("90m", 5400.0), ("12h", 43200.0), ("30d", 2592000.0)],
)
def test_the_responses_retention_takes_a_unit(value: object, seconds: float) -> None:
    assert parse({"responses": {"retention": value}}).responses.retention_seconds == seconds
    assert parse({}).responses.retention_seconds == 30 * 86400


def test_a_retention_that_is_no_duration_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"responses\.retention"):
        parse({"responses": {"retention": "a month"}})
