"""CORS as a browser does it (Debian's Chromium via Playwright): a page on an origin the
gateway lists imports the browser SDK from the gateway and streams a reply (module
script, preflighted POST, exposed ``X-Stream-Id``); a gateway that does not list the
origin refuses the page. Missing Chromium skips (fails under ``CI=true``)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.browser import chromium
from support.net import free_port
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway

SITE_PORT = free_port()
SITE = f"http://127.0.0.1:{SITE_PORT}"  # a page elsewhere, served by `site` below


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>another site</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


RUN = """async ([sdk, base]) => {
  const { streamChat } = await import(sdk);
  let text = '', streamId = null, error = null;
  try {
    for await (const event of streamChat({
      baseUrl: base + '/v1', model: 'local/echo', maxRetries: 0,
      messages: [{ role: 'user', content: 'across two origins' }],
      onOpen: (info) => { streamId = info.streamId; },
    })) {
      if (event.type === 'text') text += event.text;
      if (event.type === 'error') error = JSON.stringify(event);
    }
  } catch (e) { error = String(e); }
  return { text, streamId, error };
}"""


@pytest.fixture(scope="module")
def site() -> Iterator[None]:
    """A real server on another loopback port (Chromium lets only a page that really
    comes from loopback reach loopback)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", SITE_PORT), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield
    server.shutdown()


@pytest.fixture(scope="module")
def gateways(workdir: Path, fake: FakeUpstream, site: None) -> Iterator[tuple[Gateway, Gateway]]:
    allowing = start_gateway(workdir, gateway_config(fake, http={"cors_origins": [SITE]}))
    closed = start_gateway(workdir, gateway_config(fake))
    yield allowing, closed
    allowing.proc.stop()
    closed.proc.stop()


def run_on_site(gateways: tuple[Gateway, Gateway], base: str) -> dict[str, Any]:
    allowing, _ = gateways
    with chromium() as browser:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(f"{SITE}/")
            result: dict[str, Any] = page.evaluate(
                RUN, [f"{allowing.url}/static/tokenrelay.js", base]
            )
        finally:
            context.close()
    return result


def test_a_listed_origin_streams_with_the_browser_sdk(gateways: tuple[Gateway, Gateway]) -> None:
    allowing, _ = gateways
    result = run_on_site(gateways, allowing.url)
    assert result["error"] is None
    assert "across two origins" in result["text"]
    assert result["streamId"]  # X-Stream-Id was exposed to the page


def test_an_unlisted_origin_is_refused(gateways: tuple[Gateway, Gateway]) -> None:
    _, closed = gateways
    result = run_on_site(gateways, closed.url)
    assert result["text"] == "" and result["error"]
