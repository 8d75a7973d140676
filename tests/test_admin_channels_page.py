"""The channels section of /admin in Chromium: the config file's providers listed
read-only; a channel created, edited and disabled through the page takes effect on the
next request, its weight, timeouts and limits included; upstream keys typed in are shown only
masked. Writes docs/admin-channels.png."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.browser import chromium
from support.procs import FakeUpstream, Gateway, gateway_config, start_fake, start_gateway

MASTER = "master-" + "p" * 32
AUTH = {"Authorization": f"Bearer {MASTER}"}
DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def second_fake(workdir: Path) -> Iterator[FakeUpstream]:
    upstream = start_fake(workdir)
    yield upstream
    upstream.proc.stop()


@pytest.fixture(scope="module")
def gateway(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    config = gateway_config(fake, master_key=MASTER)
    gw = start_gateway(workdir, config, {"TOKENRELAY_SECRET_KEY": "page-test-secret"})
    yield gw
    gw.proc.stop()


def status_of(gw: Gateway, model: str) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "x"}]}
    return httpx.post(
        f"{gw.base_url}/chat/completions", json=body, headers=AUTH, timeout=20
    ).status_code


def until(page: Any, js: str, timeout: float = 15.0) -> Any:
    """The page's CSP forbids wait_for_function's string evaluation: poll evaluate."""
    deadline = time.monotonic() + timeout
    while not (value := page.evaluate(js)):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {js}")
        time.sleep(0.05)
    return value


def test_create_edit_disable_a_channel_in_the_page(
    gateway: Gateway, fake: FakeUpstream, second_fake: FakeUpstream
) -> None:
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{gateway.url}/admin")
        page.wait_for_selector("#master-key", state="visible")
        page.fill("#master-key", MASTER)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#dashboard", state="visible")
        config_row = page.locator("#channels-body tr[data-channel='fake']")
        config_row.wait_for()
        assert "read-only" in config_row.inner_text()

        page.click("#new-channel")
        page.fill("#c-name", "pagech")
        page.fill("#c-base-url", f"{fake.base_url}/v1")
        page.fill("#c-models", "*")
        page.fill("#c-keys", "page-upstream-0000p1p1\npage-upstream-0000p2p2")
        page.click("#channel-form button[type=submit]")
        row = page.locator("#channels-body tr[data-channel='pagech']")
        row.wait_for()
        text = row.inner_text()
        assert "…p1p1" in text and "…p2p2" in text and "page-upstream" not in page.content()
        assert page.is_hidden("#channel-form")
        assert status_of(gateway, "pagech/gen/2") == 200  # served at once

        second_fake.clear()
        row.locator("button[data-action=edit]").click()
        assert page.input_value("#c-name") == "pagech" and page.input_value("#c-keys") == ""
        assert page.input_value("#c-weight") == "1" and page.input_value("#c-timeouts") == ""
        page.fill("#c-base-url", f"{second_fake.base_url}/v1")
        page.fill("#c-timeouts", "first_token=30 total")
        page.click("#channel-form button[type=submit]")
        assert "is not NAME=NUMBER" in page.locator("#channel-form-error").inner_text()
        page.fill("#c-weight", "2.5")
        page.fill("#c-timeouts", "first_token=30, total=900")
        page.fill("#c-limits", "rpm=600")
        page.click("#channel-form button[type=submit]")
        until(page, "() => document.querySelector('#channel-form').hidden")
        assert status_of(gateway, "pagech/gen/3") == 200
        edited = httpx.get(f"{gateway.url}/admin/channels/pagech", headers=AUTH).json()
        assert edited["weight"] == 2.5 and edited["timeouts"] == {"first_token": 30, "total": 900}
        assert edited["limits"] == {"rpm": 600}
        weight_cell = row.locator("td[data-label=Weight]")
        until(page, "() => document.querySelector(\"tr[data-channel='pagech'] "
                    "td[data-label=Weight]\").textContent.includes('first_token 30 s')")  # fmt: skip
        assert weight_cell.inner_text().startswith("2.5") and "rpm 600" in weight_cell.inner_text()
        assert second_fake.find("gen/3")["key"] in ("…p1p1", "…p2p2")  # there, same keys

        row.locator("button[data-action=toggle]").click()
        until(page, "() => document.querySelector(\"tr[data-channel='pagech']\")"
                    ".classList.contains('disabled')")  # fmt: skip
        assert status_of(gateway, "pagech/gen/2") == 404
        listed = httpx.get(f"{gateway.url}/admin/channels/pagech", headers=AUTH).json()
        assert listed["enabled"] is False and listed["base_url"] == f"{second_fake.base_url}/v1"

        DOCS.mkdir(exist_ok=True)
        section = page.locator("section[aria-labelledby=channels-title]")
        section.screenshot(path=str(DOCS / "admin-channels.png"))
        assert not errors, errors
        context.close()
