"""``tokenrelay keys …`` and ``tokenrelay usage``, straight on SQLite and PostgreSQL."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.services import shared_postgres

from tokenrelay.keys_cli import add_subcommands, main
from tokenrelay.store import Store, UsageRow

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cli.db'}"
    return shared_postgres().new_database()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def _find(url: str, secret: str) -> str | None:
    store = await Store.open(url)
    try:
        key = await store.find_key(secret)
        return key.status() if key else None
    finally:
        await store.close()


def test_key_life_cycle(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "keys", "create", "--name", "ci", "--models", "openai/*, local/echo",
        "--rpm", "60", "--tpm", "10000", "--max-concurrent", "4", "--budget", "25",
        "--budget-period", "daily", "--expires", "30d", "--database-url", db,
    )  # fmt: skip
    assert code == 0, err
    secret = out.strip()
    assert secret.startswith("sk-") and len(secret) == 43  # stdout holds only the secret
    assert "shown only now" in err
    assert asyncio.run(_find(db, secret)) == "active"

    code, out, _ = run(capsys, "keys", "list", "--database-url", db)
    assert code == 0 and secret not in out
    header, row = out.strip().splitlines()
    assert header.split()[:5] == ["ID", "NAME", "PREFIX", "STATUS", "MODELS"]
    assert "openai/*,local/echo" in row and "$25/daily" in row and "active" in row
    key_id = row.split()[0]

    code, out, _ = run(capsys, "keys", "rotate", key_id, "--database-url", db)
    new_secret = out.strip()
    assert code == 0 and new_secret != secret
    assert asyncio.run(_find(db, secret)) is None
    assert asyncio.run(_find(db, new_secret)) == "active"

    code, out, _ = run(capsys, "keys", "revoke", key_id, "--json", "--database-url", db)
    assert code == 0 and json.loads(out)["status"] == "revoked"
    assert asyncio.run(_find(db, new_secret)) == "revoked"
    code, out, _ = run(capsys, "keys", "list", "--json", "--database-url", db)
    assert json.loads(out) == []
    code, out, _ = run(capsys, "keys", "list", "--all", "--json", "--database-url", db)
    assert [k["id"] for k in json.loads(out)] == [key_id]

    code, _, err = run(capsys, "keys", "rotate", key_id, "--database-url", db)
    assert code == 1 and "revoked" in err
    code, _, err = run(capsys, "keys", "revoke", "key_missing", "--database-url", db)
    assert code == 1 and "no key 'key_missing'" in err


def test_create_json_and_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'j.db'}"
    code, out, _ = run(capsys, "keys", "create", "--name", "j", "--json", "--database-url", db)
    created = json.loads(out)
    assert code == 0 and created["secret"].startswith("sk-") and created["key"]["models"] is None
    code, _, err = run(capsys, "keys", "create", "--name", " ", "--database-url", db)
    assert code == 2 and "name:" in err
    code, _, err = run(
        capsys, "keys", "create", "--name", "x", "--expires", "soon", "--database-url", db
    )
    assert code == 2 and "--expires" in err
    with pytest.raises(SystemExit) as exited:
        main(["keys", "create", "--name", "x", "--rpm", "0"])
    assert exited.value.code == 2
    code, _, err = run(capsys, "keys", "list", "--database-url", "mysql://nowhere/db")
    assert code == 2 and "mysql" in err


def test_usage_table(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "keys", "create", "--name", "team", "--json", "--database-url", db)
    key_id = json.loads(out)["key"]["id"]

    async def record() -> None:
        store = await Store.open(db)
        await store.insert_usage(
            [
                UsageRow(request_id=f"u{i}", model=f"m{i % 2}", key_id=key_id if i else None,
                         input_tokens=100, output_tokens=10, cost_usd=0.125)
                for i in range(4)
            ]
        )  # fmt: skip
        await store.close()

    asyncio.run(record())
    code, out, _ = run(capsys, "usage", "--database-url", db)
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].split()[:3] == ["KEY", "NAME", "REQUESTS"]
    assert lines[1].split()[:4] == [key_id, "team", "3", "300"]
    assert lines[2].split()[:2] == ["(no", "key)"]
    assert lines[-1] == "4 requests, $0.500000"
    code, out, _ = run(
        capsys, "usage", "--by", "model", "--since", "1d", "--json", "--database-url", db
    )
    report = json.loads(out)
    assert report["by"] == "model" and report["since"].endswith("Z")
    assert {r["group"]: r["requests"] for r in report["data"]} == {"m0": 2, "m1": 2}
    code, _, err = run(capsys, "usage", "--since", "last week", "--database-url", db)
    assert code == 2 and "--since" in err


def test_subcommands_plug_into_another_parser() -> None:
    parser = argparse.ArgumentParser(prog="tokenrelay")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve")
    add_subcommands(sub)
    args = parser.parse_args(["usage", "--by", "day"])
    assert args.command == "usage" and args.by == "day" and callable(args.func)
    args = parser.parse_args(["keys", "revoke", "key_1"])
    assert args.keys_command == "revoke" and args.key_id == "key_1"


def test_database_defaults_from_environment_then_local_file(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("TOKENRELAY_DATABASE_URL", None)
    cli = [sys.executable, "-m", "tokenrelay.keys_cli"]
    made = subprocess.run([*cli, "keys", "create", "--name", "local"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert made.stdout.strip().startswith("sk-") and (tmp_path / "tokenrelay.db").exists()
    other = tmp_path / "elsewhere.db"
    env["TOKENRELAY_DATABASE_URL"] = f"sqlite:///{other}"
    listed = subprocess.run([*cli, "keys", "list", "--json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert json.loads(listed.stdout) == [] and other.exists()
