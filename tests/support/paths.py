"""Where the shared recorded streams live, and how tests ask for them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "streams"


def fixtures_dir() -> Path:
    """The recorded streams, or a skip (a failure under CI=true) when ../shared is absent."""
    if FIXTURES.is_dir():
        return FIXTURES
    reason = f"recorded streams not found at {FIXTURES} (../shared is absent)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def fixture_files(pattern: str = "*/*.sse") -> list[Path]:
    """Fixture files for parametrisation; empty when ../shared is absent (the test that
    uses them then calls fixtures_dir() to skip or fail with the reason)."""
    return sorted(FIXTURES.glob(pattern)) if FIXTURES.is_dir() else []
