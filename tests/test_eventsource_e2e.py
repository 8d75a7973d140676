"""``EventSource`` can start a chat (``/v1/chat/stream``): a single-stream token minted
with the API key in a header, a GET that starts the stream with only that token in its
URL, ``data:`` frames an ``onmessage`` handler renders, a final ``[DONE]``; one start
per token, reconnects re-attach, no key in a URL, the token never in the log. Real
gateway processes; Chromium (Playwright) runs the demo page, the browser SDK's
``eventSourceChat`` and the tutorial's bare ``new EventSource(url)`` from the same
origin."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.browser import chromium
from support.procs import FakeUpstream, Gateway, gateway_config, sse_payloads, start_gateway

from tokenrelay.sse import SSEDecoder

pytestmark = pytest.mark.timeout(120)

MASTER = "master-" + "e" * 32
PROMPT = "streamed to a bare event source"


@pytest.fixture(scope="module")
def secured(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    config = gateway_config(fake, master_key=MASTER, local={"rate": 100}, streams={"grace": 5})
    gateway = start_gateway(workdir, config)
    yield gateway
    gateway.proc.stop()


@pytest.fixture(scope="module")
def key(secured: Gateway) -> str:
    reply = httpx.post(
        f"{secured.url}/admin/keys",
        json={"name": "browser", "models": ["local/*"]},
        headers={"Authorization": f"Bearer {MASTER}"},
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["secret"])


def mint(gw: Gateway, key: str | None, body: dict[str, Any] | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{gw.url}/v1/chat/stream", json=body, headers=headers, timeout=10)


def chat_body(prompt: str = PROMPT, model: str = "local/echo") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}]}


def text_of(payloads: list[Any]) -> str:
    return "".join(
        (p["choices"][0]["delta"].get("content") or "")
        for p in payloads
        if isinstance(p, dict) and p.get("choices")
    )


def test_a_token_starts_one_stream_of_data_frames_and_done(secured: Gateway, key: str) -> None:
    minted = mint(secured, key, chat_body())
    assert minted.status_code == 200, minted.text
    answer = minted.json()
    token = answer["token"]
    assert answer["url"] == f"/v1/chat/stream?token={token}" and answer["expires_in"] > 0
    assert key not in answer["url"]
    got = httpx.get(f"{secured.url}{answer['url']}", timeout=20)
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/event-stream")
    frames = list(SSEDecoder().iter([got.content]))
    assert all(f.event is None for f in frames)  # default events: onmessage gets them all
    assert frames[-1].data == "[DONE]"
    assert text_of(sse_payloads(got.content)) == PROMPT
    again = httpx.get(f"{secured.url}{answer['url']}", timeout=10)
    assert again.status_code == 401
    assert again.json()["error"]["code"] == "invalid_stream_token"
    # a reconnect (EventSource's own, with Last-Event-ID) re-attaches: no second stream
    last = next(f.id for f in frames if f.id)
    resumed = httpx.get(
        f"{secured.url}{answer['url']}", headers={"Last-Event-ID": last}, timeout=10
    )
    assert resumed.status_code == 200
    later = list(SSEDecoder().iter([resumed.content]))
    assert later[-1].data == "[DONE]" and len(later) == len(frames) - 1
    assert secured.proc.output().count(token) == 0  # logged by prefix only
    assert token[:7] in secured.proc.output()


def test_a_bare_token_takes_the_request_from_the_query(secured: Gateway, key: str) -> None:
    token = mint(secured, key).json()["token"]
    got = httpx.get(
        f"{secured.url}/v1/chat/stream",
        params={"token": token, "model": "local/echo", "prompt": "from the query", "max_tokens": 2},
        timeout=20,
    )
    assert got.status_code == 200
    assert text_of(sse_payloads(got.content)).split() == ["from", "the"]


def test_what_the_gateway_refuses(secured: Gateway, key: str) -> None:
    url = f"{secured.url}/v1/chat/stream"
    no_token = httpx.get(url, params={"model": "local/echo", "prompt": "x"}, timeout=10)
    assert no_token.status_code == 401
    assert no_token.json()["error"]["code"] == "stream_token_required"
    in_url = httpx.get(url, params={"key": key, "model": "local/echo", "prompt": "x"}, timeout=10)
    assert in_url.status_code == 400 and key not in in_url.text
    assert mint(secured, None, chat_body()).status_code == 401  # minting needs the key
    assert mint(secured, key, chat_body(model="fake/gen/3")).status_code == 404  # not its model
    bad = mint(secured, key, {"model": "local/echo"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages"
    wrong = httpx.get(url, params={"token": "st_made-up"}, timeout=10)
    assert wrong.status_code == 401


# --- Chromium ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def test_the_demo_page_streams_through_a_bare_event_source(
    browser: Any, secured: Gateway, key: str
) -> None:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.goto(f"{secured.url}/static/eventsource.html")
    page.fill("#key", key)
    page.fill("#prompt", PROMPT)
    page.click("#send")
    page.wait_for_function("() => document.querySelector('#status').textContent === 'done'")
    assert page.text_content("#output") == PROMPT
    started = [u for u in urls if "/v1/chat/stream?" in u]
    assert len(started) == 1 and "token=st_" in started[0]
    assert not any(key in u for u in urls)  # the key went in a header only
    assert errors == []
    context.close()


def test_the_browser_sdk_and_the_tutorial_url(
    browser: Any, secured: Gateway, key: str, gateway: Gateway
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{secured.url}/static/eventsource.html")
    text = page.evaluate(
        """async ([key, prompt]) => {
          const { eventSourceChat } = await import('/static/tokenrelay.js');
          const pieces = [];
          return await new Promise((resolve, reject) => {
            eventSourceChat({
              model: 'local/echo', apiKey: key,
              messages: [{ role: 'user', content: prompt }],
              onText: (t) => pieces.push(t),
              onDone: (all) => resolve(JSON.stringify({ all, pieces: pieces.length })),
              onError: reject,
            }).catch(reject);
          });
        }""",
        [key, PROMPT],
    )
    result = json.loads(text)
    assert result["all"] == PROMPT and result["pieces"] == len(PROMPT.split())
    # open mode: the tutorial's URL as it is, same origin
    page.goto(f"{gateway.url}/static/eventsource.html")
    rendered = page.evaluate(
        """() => new Promise((resolve, reject) => {
          const source = new EventSource('/v1/chat/stream?model=local/echo&prompt=hello%20tutorial');
          let text = '';
          source.onmessage = (e) => {
            if (e.data === '[DONE]') { source.close(); resolve(text); return; }
            text += JSON.parse(e.data).choices[0]?.delta?.content ?? '';
          };
          source.onerror = () => { source.close(); reject(new Error('failed')); };
        })"""
    )
    assert rendered == "hello tutorial"
    context.close()
