"""The web pages and the browser SDK.

- the routes of ``server/web.py`` (in process): content types, cache headers, CSP;
- ``node --test tests/js/*.test.mjs``: ``tokenrelay.js`` (parser against every recorded
  stream split at every byte, ``streamChat`` against a real gateway with dropped
  connections) and the Markdown renderer;
- Chromium (Debian's, driven by the Python ``playwright`` package) against a real gateway:
  streaming growth, stop, an XSS payload, going offline and back, the demo page, themes.

Missing node or chromium skips these with the reason; under ``CI=true`` it fails instead.
``UPDATE_SCREENSHOTS=1`` rewrites ``docs/chat-light.png`` and ``docs/chat-dark.png``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient
from support.browser import chromium, skip_or_fail
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway

from tokenrelay.server.web import CONTENT_SECURITY_POLICY, load_assets, web_routes

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "src" / "tokenrelay" / "web"
# Recorded answers the fake upstream replays, listed so that the model picker offers them.
REPLAYS = ["replay/openai/chat_text_include_usage", "replay/deepseek/chat_reasoning_content"]

REPLY_TEXT = """() => {
  const all = document.querySelectorAll('.turn.assistant .content');
  return all.length ? all[all.length - 1].textContent : '';
}"""
STREAMING = "() => document.querySelector('.turn.assistant.streaming') !== null"


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(1, n + 1))


# ---- routes, in process ---------------------------------------------------------------


@pytest.fixture(scope="module")
def web_client() -> Iterator[TestClient]:
    with TestClient(Starlette(routes=web_routes())) as client:
        yield client


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/", "text/html; charset=utf-8"),
        ("/demo", "text/html; charset=utf-8"),
        ("/static/tokenrelay.js", "text/javascript; charset=utf-8"),
        ("/static/app.js", "text/javascript; charset=utf-8"),
        ("/static/style.css", "text/css; charset=utf-8"),
        ("/static/icon.svg", "image/svg+xml"),
    ],
)
def test_web_routes_serve_package_files(
    web_client: TestClient, path: str, content_type: str
) -> None:
    r = web_client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["x-content-type-options"] == "nosniff"
    etag = r.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    if content_type.startswith("text/html"):
        assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    # Revalidation: the same ETag answers 304 with no body.
    again = web_client.get(path, headers={"If-None-Match": f'W/"nope", {etag}'})
    assert again.status_code == 304 and again.content == b""
    assert web_client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    assert web_client.head(path).status_code == 200


def test_web_routes_serve_nothing_else(web_client: TestClient) -> None:
    for path in [
        "/static/nope.js",
        "/static/../server/web.py",
        "/static/%2e%2e/server/web.py",
        "/static/",
        "/static/web.py",
        "/index.html",
    ]:
        assert web_client.get(path).status_code == 404, path
    assert set(load_assets()) >= {"index.html", "demo.html", "tokenrelay.js", "style.css"}
    assert not any(name.endswith(".py") for name in load_assets())


def test_pages_work_under_a_strict_content_security_policy() -> None:
    """No inline script, style or event handler in our own HTML: the CSP forbids them."""
    for page in ["index.html", "demo.html"]:
        html = (WEB / page).read_text()
        for script in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in script, f"{page}: inline script {script}"
        assert not re.search(r"<style\b", html), f"{page}: <style> element"
        assert not re.search(r"\sstyle\s*=", html), f"{page}: style attribute"
        assert not re.search(r"\son[a-z]+\s*=", html, re.I), f"{page}: event handler attribute"
        assert "javascript:" not in html
        assert not re.search(r"(src|href)=\"(https?:)?//", html), f"{page}: external asset"
    for script in WEB.glob("*.js"):
        assert ".innerHTML" not in script.read_text(), f"{script.name} uses innerHTML"


# ---- a gateway serving the pages --------------------------------------------------------


@pytest.fixture(scope="module")
def web(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    """A gateway with local/echo at 40 words/s (visible growth) and two recorded answers."""
    config = gateway_config(fake, local={"rate": 40}, keepalive_interval=0.5)
    config["providers"][0]["models"] = [*REPLAYS, "*"]
    gw = start_gateway(workdir, config)
    try:
        if httpx.get(f"{gw.url}/static/tokenrelay.js", timeout=5).status_code != 200:
            skip_or_fail(
                "the gateway does not serve /static: create_app() does not mount web_routes()"
            )
        yield gw
    finally:
        gw.proc.stop()


@pytest.mark.timeout(360)
def test_node_suite(web: Gateway) -> None:
    """tests/js/*.test.mjs under node's test runner, against this gateway."""
    node = shutil.which("node")
    if node is None:
        skip_or_fail("node is not installed (Debian package: nodejs)")
        return
    files = sorted(str(p) for p in (ROOT / "tests" / "js").glob("*.test.mjs"))
    env = {
        **os.environ,
        "TOKENRELAY_TEST_GATEWAY": web.url,
        "TOKENRELAY_PYTHON": sys.executable,
    }
    run = subprocess.run(
        [node, "--test", *files],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # a guard: about 30 s on a quiet 2-core machine
    )
    summary = "\n".join(line for line in run.stdout.splitlines() if line.startswith("# "))
    assert run.returncode == 0, f"{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
    assert "# fail 0" in summary, summary


# ---- Chromium ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


class Page:
    """A page in a fresh context, with the console errors it logged and its requests."""

    def __init__(
        self, browser: Any, base: str, width: int = 1280, height: int = 860, **context: Any
    ) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height}, **context)
        self.page = self.context.new_page()
        self.base = base
        self.errors: list[str] = []
        self.requests: list[Any] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def until(self, js: str, timeout: float = 15.0) -> Any:
        """Poll ``js`` (a function expression) until truthy. The pages' CSP forbids the
        string evaluation that Playwright's wait_for_function uses; evaluate does not."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.page.evaluate(js)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {js}")
            time.sleep(0.03)

    def open(self, path: str = "/", model: str = "local/echo") -> None:
        self.page.goto(self.base + path)
        self.until("() => document.querySelector('#model').options.length > 1")
        self.page.select_option("#model", model)

    def send(self, text: str) -> None:
        self.page.fill("#prompt", text)
        self.page.keyboard.press("Enter")

    def reply(self) -> str:
        return str(self.page.evaluate(REPLY_TEXT))

    def wait_reply_done(self, timeout: float = 20.0) -> str:
        self.until("() => document.querySelector('.turn.assistant') !== null")
        self.until(f"() => !({STREAMING})()", timeout)
        return self.reply()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def chat(browser: Any, web: Gateway) -> Iterator[Page]:
    page = Page(browser, web.url)
    yield page
    page.close()


def test_chat_text_grows_over_time(chat: Page) -> None:
    message = words(40)  # about one second at 40 words/s
    chat.open()
    chat.send(message)
    samples: list[int] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        samples.append(len(chat.reply()))
        if not chat.page.evaluate(STREAMING) and samples[-1]:
            break
        time.sleep(0.1)
    growth = sorted(set(samples))
    assert len(growth) >= 5, f"the text did not grow in steps: {samples}"
    assert samples == sorted(samples), f"the text shrank: {samples}"
    assert 0 < growth[1] < len(message) / 2, f"not streamed, arrived at once: {samples}"
    assert chat.wait_reply_done() == message
    stats = chat.page.text_content(".turn.assistant .stats") or ""
    assert re.search(r"TTFT \d+ ms · [\d.]+ tok/s · 40 tokens", stats), stats
    assert chat.page.is_visible(".turn.user") and chat.page.text_content(".user-text") == message
    assert not chat.errors


def test_stop_mid_answer_stops_growth_and_cancels(chat: Page, web: Gateway) -> None:
    message = words(300)  # 7.5 s at 40 words/s
    chat.open()
    chat.send(message)
    chat.until(f"() => ({REPLY_TEXT})().length > 30")
    chat.page.click("#stop")
    chat.page.wait_for_selector(".turn.assistant .badge.stopped", state="visible")
    stopped = chat.reply()
    time.sleep(0.8)
    assert chat.reply() == stopped, "the text kept growing after Stop"
    assert message.startswith(stopped) and len(stopped) < len(message) / 2
    assert chat.page.is_visible("#send") and not chat.page.is_visible("#stop")
    cancels = [r for r in chat.requests if r.method == "POST" and r.url.endswith("/cancel")]
    assert len(cancels) == 1
    stream_id = cancels[0].url.rsplit("/", 2)[-2]
    # The stream was cancelled before its end (a finished one would say "finished").
    again = httpx.post(f"{web.url}/v1/streams/{stream_id}/cancel", timeout=5).json()
    assert again["status"] == "cancelled"
    assert not chat.errors


def test_xss_payload_in_a_reply_renders_as_text(chat: Page) -> None:
    payload = (
        '<img src=x onerror="window.__xss=1"> [x](javascript:alert(1)) '
        "<script>window.__xss=2</script>"
    )
    chat.open()
    chat.send(payload)
    assert chat.wait_reply_done() == payload
    assert chat.page.text_content(".user-text") == payload
    assert chat.page.evaluate("() => typeof window.__xss") == "undefined"
    bad = chat.page.evaluate(
        """() => {
          const bad = [];
          for (const el of document.querySelectorAll('*')) {
            for (const attr of el.attributes) {
              if (/^on/i.test(attr.name)) bad.push(`${el.tagName} ${attr.name}`);
              if (/^\\s*javascript:/i.test(attr.value)) bad.push(`${el.tagName} ${attr.name}=${attr.value}`);
            }
          }
          if (document.querySelector('.turn img:not(.avatar), .turn script')) bad.push('img/script');
          return bad;
        }"""
    )
    assert bad == [], bad
    assert not chat.errors


def _is_chat_post(request: Any) -> bool:
    return bool(request.method == "POST" and "/chat/completions" in request.url)


def test_regenerate_copy_api_key_and_inline_error(chat: Page) -> None:
    chat.context.grant_permissions(["clipboard-read", "clipboard-write"])
    # The key: kept in sessionStorage, sent as a Bearer token (this gateway is open).
    chat.open()
    chat.page.click("#key-toggle")
    chat.page.fill("#api-key", "tr-test-key")
    chat.page.click("#key-form button[type=submit]")
    assert chat.page.evaluate("() => sessionStorage.getItem('tokenrelay.apiKey')") == "tr-test-key"
    chat.send("```py\nprint(1)\n```")
    chat.wait_reply_done()
    posts = [r for r in chat.requests if r.method == "POST" and "/chat/completions" in r.url]
    assert posts[-1].headers.get("authorization") == "Bearer tr-test-key"
    # Copy: the code block's code, and the reply's Markdown.
    chat.page.click(".turn.assistant .code-copy")
    assert chat.page.evaluate("() => navigator.clipboard.readText()") == "print(1)"
    chat.page.click(".turn.assistant .copy-reply")
    assert chat.page.evaluate("() => navigator.clipboard.readText()") == "```py\nprint(1)\n```"
    # Regenerate: the last reply is asked again and replaced, the history is unchanged.
    # (the request is the sign it started: a one-word reply may stream too briefly to see)
    with chat.page.expect_request(_is_chat_post):
        chat.page.click(".turn.assistant.last .regenerate")
    chat.wait_reply_done()
    assert chat.page.locator(".turn.assistant").count() == 1
    assert chat.page.locator(".turn.user").count() == 1
    assert len([r for r in chat.requests if "/chat/completions" in r.url]) == 2
    # An error before the stream is shown inline, in the reply's place.
    chat.page.evaluate(
        "() => document.querySelector('#model').add(new Option('local/nope', 'local/nope'))"
    )
    chat.page.select_option("#model", "local/nope")
    chat.send("hello")
    chat.page.wait_for_selector(".turn.assistant.last .error", state="visible")
    error = chat.page.text_content(".turn.assistant.last .error") or ""
    assert "404" in error and "model_not_found" in error, error
    assert chat.page.is_visible("#send")
    # ... and Regenerate asks again, here with a model that exists.
    chat.page.select_option("#model", "local/echo")
    with chat.page.expect_request(_is_chat_post):
        chat.page.click(".turn.assistant.last .regenerate")
    assert chat.wait_reply_done() == "hello"
    assert all("404" in e for e in chat.errors), chat.errors  # the refused request's log line


def test_offline_mid_answer_resumes_without_gap_or_repeat(chat: Page) -> None:
    message = words(120)  # 3 s at 40 words/s
    chat.open()
    chat.send(message)
    chat.until(f"() => ({REPLY_TEXT})().length > 40")
    chat.context.set_offline(True)
    chat.page.wait_for_selector(".turn.assistant .reconnected.waiting", state="visible")
    time.sleep(0.6)
    chat.context.set_offline(False)
    assert chat.wait_reply_done() == message
    notice = chat.page.text_content(".turn.assistant .notice-text") or ""
    assert chat.page.is_visible(".turn.assistant .reconnected") and "Reconnected" in notice
    resumes = [r for r in chat.requests if r.method == "GET" and "/v1/streams/" in r.url]
    assert len(resumes) == 1
    assert re.fullmatch(r".+:\d+", resumes[0].headers.get("last-event-id", ""))
    # Going offline fails nothing else: no error logged but the dropped connection's own.
    assert all("ERR_INTERNET_DISCONNECTED" in e or "network" in e.lower() for e in chat.errors)


def test_demo_page_shows_raw_frames_with_arrival_times(chat: Page) -> None:
    chat.open("/demo")
    chat.page.click("#send")
    chat.until("() => document.querySelectorAll('#frames .frame').length >= 5")
    chat.until(
        "() => document.querySelector('#demo-status').textContent.includes('finish_reason: stop')"
    )
    rows = chat.page.locator("#frames .frame")
    times = [int(t[1:-3]) for t in rows.locator(".frame-time").all_text_contents()]
    assert times == sorted(times) and times[-1] > times[0], times
    bodies = "".join(rows.locator(".frame-body").all_text_contents())
    assert "data: {" in bodies and "data: [DONE]" in bodies and re.search(r"id: \S+:\d+", bodies)
    rendered = chat.page.text_content("#rendered") or ""
    assert "arrival time" in rendered and "你好 🌍" in rendered
    assert chat.page.locator("#rendered strong").count() >= 1
    assert int(chat.page.text_content("#stat-frames") or 0) >= 5
    assert not chat.errors


MARKDOWN = (
    "Streams, **resumed**: drop the network and the reply continues without a gap.\n\n"
    "| route | what |\n|---|---|\n| `POST /v1/chat/completions` | stream |\n"
    "| `GET /v1/streams/{id}` | resume |\n\n"
    "```js\nfor await (const ev of streamChat({ model, messages })) out += ev.text ?? '';\n```"
)


def _conversation(page: Page, replays: bool, drop: bool = False) -> None:
    """A short conversation: recorded answers when the fake upstream has them, and
    local/echo rendering Markdown (a table and a code block), with a network drop in the
    middle of it when ``drop``; scrolled to the end."""
    if replays:
        page.open(model=f"fake/{REPLAYS[0]}")
        page.send("What is the capital of the UK?")
        page.wait_reply_done()
        page.page.select_option("#model", "local/echo")
    else:
        page.open()
    page.send(MARKDOWN)
    if drop:
        page.until(f"() => ({REPLY_TEXT})().length > 40")
        page.context.set_offline(True)
        page.page.wait_for_selector(".turn.assistant.last .reconnected.waiting", state="visible")
        page.context.set_offline(False)
    page.wait_reply_done()
    if drop:
        assert page.reply().startswith("Streams, resumed: drop the network")
        assert page.page.is_visible(".turn.assistant.last .reconnected:not(.waiting)")
    if replays:
        page.page.select_option("#model", f"fake/{REPLAYS[1]}")
        page.send("Hello")
        page.wait_reply_done()
    page.page.evaluate(
        "() => { const s = document.querySelector('#scroll'); s.scrollTop = s.scrollHeight; }"
    )


def test_chat_page_light_dark_phone(browser: Any, web: Gateway, tmp_path: Path) -> None:
    replays = any(
        m["id"].startswith("fake/replay/") for m in httpx.get(f"{web.url}/v1/models").json()["data"]
    )
    out = ROOT / "docs" if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path
    out.mkdir(exist_ok=True)
    backgrounds = {}
    for scheme in ["light", "dark"]:
        page = Page(browser, web.url, 1280, 900, color_scheme=scheme)
        try:
            _conversation(page, replays, drop=True)
            if replays:
                # deepseek's reasoning, in a collapsed block of the second reply
                assert page.page.locator(".turn.assistant .reasoning:not([hidden])").count() == 1
            assert page.page.locator(".turn.assistant .code-frame").count() == 1
            assert page.page.locator(".turn.assistant table").count() == 1
            backgrounds[scheme] = page.page.evaluate(
                "() => getComputedStyle(document.body).backgroundColor"
            )
            page.page.screenshot(path=str(out / f"chat-{scheme}.png"))
            # The toggle switches to the other theme and remembers it.
            page.page.click("#theme-toggle")
            other = "dark" if scheme == "light" else "light"
            assert page.page.evaluate("() => document.documentElement.dataset.theme") == other
            page.page.reload()
            page.until("() => document.querySelector('#model').options.length > 1")
            assert page.page.evaluate("() => document.documentElement.dataset.theme") == other
            assert not page.errors
        finally:
            page.close()
    light, dark = (
        sum(int(v) for v in re.findall(r"\d+", backgrounds[s])[:3]) for s in ["light", "dark"]
    )
    assert light > 600 and dark < 150, backgrounds
    # A phone: nothing wider than the screen (code and tables scroll inside themselves).
    phone = Page(browser, web.url, 390, 844, is_mobile=True)
    try:
        _conversation(phone, False)
        width = phone.page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width}px wide on a 390px screen"
        phone.page.screenshot(path=str(tmp_path / "chat-phone.png"))
    finally:
        phone.close()


class _CuttingProxy:
    """A TCP proxy in front of the gateway that cuts the first connection carrying a
    ``/v1/streams/`` request after ``cut_after`` bytes of its response (a dropped network)."""

    def __init__(self, target_port: int, cut_after: int) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.cut = False
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        state = {"stream": False, "sent": 0}

        async def to_gateway() -> None:
            while data := await reader.read(65536):
                if b"/v1/streams/" in data and not self.cut:
                    state["stream"] = True
                up_writer.write(data)
            up_writer.close()

        async def to_browser() -> None:
            while data := await up_reader.read(65536):
                if state["stream"] and not self.cut:
                    room = self.cut_after - state["sent"]
                    state["sent"] += len(data)
                    if state["sent"] > self.cut_after:
                        # forward up to the cut (headers and some frames, maybe half of
                        # one), then drop the connection
                        self.cut = True
                        writer.write(data[:room])
                        await writer.drain()
                        writer.transport.abort()
                        up_writer.transport.abort()
                        return
                writer.write(data)
            writer.close()

        await asyncio.gather(to_gateway(), to_browser(), return_exceptions=True)

    def close(self) -> None:
        def stop() -> None:
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.call_later(0.05, self._loop.stop)

        self._loop.call_soon_threadsafe(stop)


def test_eventsource_reconnects_through_the_resume_route(browser: Any, web: Gateway) -> None:
    """A browser's own EventSource, cut off mid-stream, reconnects by itself (it sends
    Last-Event-ID) and gets every frame exactly once."""
    answer = words(120)
    body = {
        "model": "local/echo",
        "stream": True,
        "messages": [{"role": "user", "content": answer}],
    }
    resumes = {"X-Tokenrelay-Resume": "1"}  # a client that resumes: its leaving has the grace
    with httpx.stream("POST", f"{web.base_url}/chat/completions", json=body, headers=resumes) as r:
        stream_id = r.headers["x-stream-id"]  # leave at once: the stream goes on (grace)
    proxy = _CuttingProxy(web.proc.port, cut_after=1500)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{proxy.port}/demo")
        page.evaluate(
            """(id) => { window.__got = []; window.__opens = 0;
              const es = new EventSource('/v1/streams/' + id + '?after=0');
              es.onopen = () => { window.__opens += 1; };
              es.onmessage = (e) => { window.__got.push([e.lastEventId, e.data]);
                                       if (e.data === '[DONE]') es.close(); }; }""",
            stream_id,
        )
        deadline = time.monotonic() + 30
        got: list[list[str]] = []
        while time.monotonic() < deadline:
            got = page.evaluate("window.__got")
            if got and got[-1][1] == "[DONE]":
                break
            time.sleep(0.1)
        assert proxy.cut, "the proxy cut the first stream connection"
        assert page.evaluate("window.__opens") >= 2, "EventSource reconnected by itself"
        seqs = [int(i.rpartition(":")[2]) for i, _ in got]
        assert seqs == list(range(1, len(seqs) + 1)), "no gap, no duplicate"
        text = "".join(
            json.loads(d)["choices"][0]["delta"].get("content") or ""
            for _, d in got[:-1]
            if json.loads(d).get("choices")
        )
        assert text == answer
    finally:
        context.close()
        proxy.close()
