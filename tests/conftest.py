"""Shared pytest configuration. Test helpers live in tests/support/."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collections.abc import Iterator

import pytest
from support.procs import FakeUpstream, Gateway, gateway_config, start_fake, start_gateway


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("procs")


@pytest.fixture(scope="session")
def fake(workdir: Path) -> Iterator[FakeUpstream]:
    """The fake upstream, a real HTTP server in its own process, for the whole session."""
    upstream = start_fake(workdir)
    yield upstream
    upstream.proc.stop()


@pytest.fixture(scope="session")
def gateway(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    """A gateway process with the local models and the fake upstream as ``fake/…``."""
    gw = start_gateway(
        workdir,
        gateway_config(
            fake, keepalive_interval=0.2, max_body_bytes=1_000_000, streams={"grace": 0}
        ),
    )
    yield gw
    gw.proc.stop()
