"""Debian's Chromium driven by Playwright, for the page tests.

A missing Playwright package or Chromium skips those tests with the reason; under
``CI=true`` it fails them instead, so a CI run can never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def skip_or_fail(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (a failure, not a skip, under CI=true)")
    pytest.skip(reason)


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched Chromium (``TOKENRELAY_CHROMIUM``, else ``chromium`` on the PATH)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("the playwright Python package is missing (pip install -e '.[dev]')")
    executable = os.environ.get("TOKENRELAY_CHROMIUM") or shutil.which("chromium")
    if executable is None:
        skip_or_fail("chromium is not installed (Debian package: chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
