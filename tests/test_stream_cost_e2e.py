"""The bill in the stream: a streamed answer whose client asked for its cost carries it in
its final usage event (``usage.cost`` in Chat Completions' usage chunk, Anthropic's
``message_delta``, the Responses API's ``response.completed``; ``usageMetadata.cost`` in
Gemini's last chunk), with the cache figures, through every client protocol x upstream
protocol: real gateway and fake-upstream processes, the official SDKs reading the field
(Gemini: the raw stream, since ``google-genai`` drops every field it does not know).

The conversation and its prices are those of ``test_cache_e2e.py`` (the fake acts as the
provider's prompt cache, ``cache=1``; a word a token; per-token prices):

    turn 1: S (8 words) + U1 (4) = 12 prompt tokens, answer 4 (echo)
    turn 2: S + U1 + A1 + U2 (3) = 19 prompt tokens, answer 3; S + U1 (12) seen before

* an upstream that caches on its own (OpenAI, Gemini, Responses), or Anthropic without
  a mark (a Gemini client has no ``cache_control``): turn 1 12 x 2 + 4 x 10 = $64; turn
  2 7 x 2 + 12 x 0.2 + 3 x 10 = $46.40 (Anthropic unmarked reads nothing: 19 x 2 + 30 =
  $68);
* Anthropic marked (1 hour on the system prompt, then 5 minutes on the last message):
  turn 1 writes 12 for an hour, 12 x 4 + 40 = $88; turn 2 reads 12 and writes 7 for 5
  minutes, 12 x 0.2 + 7 x 2.5 + 30 = $49.90.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anthropic
import httpx
import openai
import pytest
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway
from support.usage_rows import rows

from tokenrelay.sse import SSEDecoder

pytestmark = pytest.mark.timeout(120)

PROVIDER = {"openai": "fake", "anthropic": "fakeant", "gemini": "fakegem", "responses": "fakeresp"}
PRICE = {
    "input": 2_000_000,
    "output": 10_000_000,
    "cached_input": 200_000,
    "cache_write": 2_500_000,
    "cache_write_1h": 4_000_000,
}
U1 = "tell me about caches"
U2 = "and then more"
HOUR = {"type": "ephemeral", "ttl": "1h"}
FIVE = {"type": "ephemeral"}
ASK = {"x-tokenrelay-cost": "include"}
_tags = itertools.count(1)
RUN = time.monotonic_ns()


@dataclass(frozen=True)
class Turn:
    prompt: int
    cached: int
    write: int
    cost: float


AUTO = (Turn(12, 0, 0, 64.0), Turn(19, 12, 0, 46.4))
MARKED = (Turn(12, 0, 12, 88.0), Turn(19, 12, 7, 49.9))
UNMARKED = (Turn(12, 0, 0, 64.0), Turn(19, 0, 0, 68.0))


def expected(client: str, upstream: str) -> tuple[Turn, Turn]:
    if upstream != "anthropic":
        return AUTO
    return UNMARKED if client == "gemini" else MARKED


@dataclass
class Ends:
    gateway: Gateway
    oa: openai.OpenAI
    an: anthropic.Anthropic


@pytest.fixture(scope="module")
def ends(workdir: Path, fake: FakeUpstream) -> Iterator[Ends]:
    config = gateway_config(
        fake,
        database_url=f"sqlite:///{workdir}/stream-cost-{time.monotonic_ns()}.db",
        usage={"flush_interval": 0.05},
        prices={"echo*": PRICE},
    )
    gw = start_gateway(workdir, config)
    oa = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=20)
    an = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0, timeout=20)
    yield Ends(gw, oa, an)
    gw.proc.stop()


def _marked(text: str, mark: dict[str, str], kind: str = "text") -> list[dict[str, Any]]:
    return [{"type": kind, "text": text, "cache_control": mark}]


def _chat(e: Ends, model: str, system: str, turn: int) -> dict[str, Any]:
    """OpenRouter's convention: ``usage: {include: true}``, no ``stream_options`` (asking
    for the cost brings the usage chunk)."""
    messages: list[Any] = [{"role": "system", "content": system}, {"role": "user", "content": U1}]
    if turn == 1:
        messages[0]["content"] = _marked(system, HOUR)
    else:
        messages += [
            {"role": "assistant", "content": U1},
            {"role": "user", "content": _marked(U2, FIVE)},
        ]
    stream = e.oa.chat.completions.create(
        model=model, messages=messages, stream=True, extra_body={"usage": {"include": True}}
    )
    chunks = list(stream)
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None  # the usage chunk, last
    assert all(c.usage is None for c in chunks[:-1])
    details = last.usage.prompt_tokens_details
    assert details is not None
    return {
        "prompt": last.usage.prompt_tokens,
        "cached": details.cached_tokens or 0,
        "write": details.cache_write_tokens or 0,  # (OpenRouter's field)
        "cost": (last.usage.model_extra or {})["cost"],
    }


def _responses(e: Ends, model: str, system: str, turn: int) -> dict[str, Any]:
    items: list[Any] = [{"role": "system", "content": system}, {"role": "user", "content": U1}]
    if turn == 1:
        items[0]["content"] = _marked(system, HOUR, "input_text")
    else:
        last = _marked(U2, FIVE, "input_text")
        items += [{"role": "assistant", "content": U1}, {"role": "user", "content": last}]
    stream = e.oa.responses.create(model=model, input=items, stream=True, extra_headers=ASK)
    done = [ev for ev in stream if ev.type == "response.completed"]
    usage = done[-1].response.usage
    assert usage is not None
    return {
        "prompt": usage.input_tokens,
        "cached": usage.input_tokens_details.cached_tokens,
        "cost": (usage.model_extra or {})["cost"],
    }


def _anthropic(e: Ends, model: str, system: str, turn: int) -> dict[str, Any]:
    messages: Any = [{"role": "user", "content": U1}]
    blocks: Any = system
    if turn == 1:
        blocks = _marked(system, HOUR)
    else:
        messages += [{"role": "assistant", "content": U1}, {"role": "user", "content": []}]
        messages[-1]["content"] = _marked(U2, FIVE)
    events = list(
        e.an.messages.create(
            model=model,
            max_tokens=64,
            system=blocks,
            messages=messages,
            stream=True,
            extra_headers=ASK,
        )
    )
    delta = [ev for ev in events if ev.type == "message_delta"][-1]
    start = next(ev for ev in events if ev.type == "message_start").message.usage
    u = delta.usage
    # The counts as the stream gives them: message_delta's, else message_start's (an
    # upstream's own message_delta, passed through, may carry only output_tokens)
    read = u.cache_read_input_tokens
    read = start.cache_read_input_tokens or 0 if read is None else read
    written = u.cache_creation_input_tokens
    written = start.cache_creation_input_tokens or 0 if written is None else written
    prompt = u.input_tokens if u.input_tokens is not None else start.input_tokens
    return {
        "prompt": prompt + read + written,
        "cached": read,
        "write": written,
        "cost": (u.model_extra or {})["cost"],
    }


def _gemini(e: Ends, model: str, system: str, turn: int) -> dict[str, Any]:
    contents: list[Any] = [{"role": "user", "parts": [{"text": U1}]}]
    if turn == 2:
        contents += [
            {"role": "model", "parts": [{"text": U1}]},
            {"role": "user", "parts": [{"text": U2}]},
        ]
    body = {"systemInstruction": {"parts": [{"text": system}]}, "contents": contents}
    r = httpx.post(
        f"{e.gateway.url}/v1beta/models/{quote(model, safe='/')}:streamGenerateContent?alt=sse",
        json=body,
        headers={"x-goog-api-key": "unused", **ASK},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    chunks = [json.loads(ev.data) for ev in SSEDecoder().feed(r.content)]
    meta = chunks[-1]["usageMetadata"]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert all("cost" not in c.get("usageMetadata", {}) for c in chunks[:-1])
    return {
        "prompt": meta["promptTokenCount"],
        "cached": meta.get("cachedContentTokenCount", 0),
        "cost": meta["cost"],
    }


CALL: dict[str, Callable[[Ends, str, str, int], dict[str, Any]]] = {
    "chat": _chat,
    "responses": _responses,
    "anthropic": _anthropic,
    "gemini": _gemini,
}


def _row(gw: Gateway, model: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        found = [r for r in rows(gw.config["database_url"]) if r["model"] == model]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no usage row for {model}"
        time.sleep(0.1)


@pytest.mark.parametrize("upstream", tuple(PROVIDER))
@pytest.mark.parametrize("client", tuple(CALL))
def test_the_final_usage_event_carries_the_cost_when_asked(
    ends: Ends, client: str, upstream: str
) -> None:
    tag = next(_tags)
    # one word unique to this run: the fake's cache is the session's (test_cache_e2e.py
    # plays conversations of the same shape on it)
    system = f"you are a careful assistant for conversation cost{client}{upstream}{tag}{RUN}"
    assert len(system.split()) == 8
    for turn, want in enumerate(expected(client, upstream), start=1):
        model = f"{PROVIDER[upstream]}/echo?cache=1&ttft=0.00{tag:04d}{turn}"
        seen = CALL[client](ends, model, system, turn)
        assert seen["cost"] == pytest.approx(want.cost), (turn, seen)
        assert (seen["prompt"], seen["cached"]) == (want.prompt, want.cached), (turn, seen)
        if "write" in seen:
            assert seen["write"] == want.write, (turn, seen)
        row = _row(ends.gateway, model)
        assert row["cost_usd"] == pytest.approx(seen["cost"]), turn  # the bill is the row's


@pytest.mark.parametrize("upstream", ["openai", "anthropic"])
def test_without_asking_the_stream_is_untouched(ends: Ends, upstream: str) -> None:
    """No cost asked: no ``cost`` anywhere (a same-protocol stream stays the upstream's)."""
    model = f"{PROVIDER[upstream]}/echo"
    chat = list(
        ends.oa.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hi there"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chat[-1].usage is not None and "cost" not in (chat[-1].usage.model_extra or {})
    plain = list(
        ends.oa.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi there"}], stream=True
        )
    )
    assert all(c.usage is None for c in plain)
    events = list(
        ends.an.messages.create(
            model=model,
            max_tokens=16,
            messages=[{"role": "user", "content": "hi there"}],
            stream=True,
        )
    )
    delta = [ev for ev in events if ev.type == "message_delta"][-1]
    assert "cost" not in (delta.usage.model_extra or {})


def test_a_non_streamed_gemini_answer_carries_it_too(ends: Ends) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "four words right here"}]}]}
    r = httpx.post(
        f"{ends.gateway.url}/v1beta/models/fakegem/echo:generateContent",
        json=body,
        headers={"x-goog-api-key": "unused", **ASK},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    cost = 4 * 2 + 4 * 10  # 4 prompt tokens, the 4 echoed
    assert r.json()["usageMetadata"]["cost"] == pytest.approx(cost)
    assert float(r.headers["x-tokenrelay-cost"]) == pytest.approx(cost)
    array = httpx.post(  # the JSON-array stream (no alt=sse): its last element
        f"{ends.gateway.url}/v1beta/models/fakegem/echo:streamGenerateContent",
        json=body,
        headers={"x-goog-api-key": "unused", **ASK},
        timeout=30,
    )
    assert array.status_code == 200, array.text
    assert array.json()[-1]["usageMetadata"]["cost"] == pytest.approx(cost)
