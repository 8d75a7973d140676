"""Prompt caching billed right, through every client protocol x upstream protocol: real
gateway and fake-upstream processes, the official ``openai`` (Chat Completions and
Responses) and ``anthropic`` SDKs as clients, the usage row read back from the database.

The fake upstream acts as each provider's prompt cache (``cache=1``, see
``tokenrelay/fake/prefix_cache.py``): OpenAI, Gemini and Responses upstreams cache every
prompt and report reads only; Anthropic caches only what ``cache_control`` marks and
reports its writes apart, split into 5-minute and 1-hour ones.

One conversation of two turns per pair. The fake's tokenizer counts words:

    system  S   8 words      turn 1: S + U1           = 12 prompt tokens, answer 4 (echo)
    user    U1  4 words      turn 2: S + U1 + A1 + U2 = 19 prompt tokens, answer 3
    user    U2  3 words              its prefix S + U1 (12) was seen on turn 1

Prices (per token, so the sums are easy to check by hand): input $2, output $10,
cache read $0.20, 5-minute write $2.50, 1-hour write $4.

* Upstreams that cache on their own (OpenAI, Gemini, Responses):
  turn 1: 12 x 2 + 4 x 10 = $64; turn 2: 7 x 2 + 12 x 0.2 + 3 x 10 = $46.40
  (what caching saved on turn 2: 19 x 2 + 30 - 46.40 = $21.60).
* Anthropic, turn 1 marked ``ttl: "1h"`` on the system prompt, turn 2 marked (5 minutes)
  on its last message, with Anthropic's ``cache_control`` (on OpenAI and Responses text
  content parts too, OpenRouter's convention): turn 1 writes all 12 for an hour:
  12 x 4 + 40 = $88 (saved -$24); turn 2 reads 12 and writes 7 for 5 minutes:
  12 x 0.2 + 7 x 2.5 + 30 = $49.90 (saved 19 x 2 + 30 - 49.90 = $18.10).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway
from support.usage_rows import rows

pytestmark = pytest.mark.timeout(120)

CLIENTS = ("chat", "responses", "anthropic")
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
_tags = itertools.count(1)


@dataclass(frozen=True)
class Turn:
    """What one turn is charged: counts as the usage row keeps them, and its cost."""

    input: int
    output: int
    cached: int
    write: int
    write_1h: int
    cost: float
    saved: float


AUTO = (Turn(12, 4, 0, 0, 0, 64.0, 0.0), Turn(19, 3, 12, 0, 0, 46.4, 21.6))
MARKED = (Turn(12, 4, 0, 12, 12, 88.0, -24.0), Turn(19, 3, 12, 7, 0, 49.9, 18.1))
HOUR = {"type": "ephemeral", "ttl": "1h"}
FIVE = {"type": "ephemeral"}


def expected(upstream: str) -> tuple[Turn, Turn]:
    return MARKED if upstream == "anthropic" else AUTO


def _text(text: str, mark: dict[str, str], kind: str = "text") -> list[dict[str, Any]]:
    return [{"type": kind, "text": text, "cache_control": mark}]


@dataclass
class Ends:
    gateway: Gateway
    oa: openai.OpenAI
    an: anthropic.Anthropic


@pytest.fixture(scope="module")
def ends(workdir: Path, fake: FakeUpstream) -> Iterator[Ends]:
    config = gateway_config(
        fake,
        database_url=f"sqlite:///{workdir}/cache-{time.monotonic_ns()}.db",
        usage={"flush_interval": 0.05},
        prices={"echo*": PRICE},
    )
    gw = start_gateway(workdir, config)
    oa = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=20)
    an = anthropic.Anthropic(
        base_url=f"{gw.url}/anthropic", api_key="unused", max_retries=0, timeout=20
    )
    yield Ends(gw, oa, an)
    gw.proc.stop()


def _row(gw: Gateway, model: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        found = [r for r in rows(gw.config["database_url"]) if r["model"] == model]
        if found:
            assert len(found) == 1, found
            return found[0]
        assert time.monotonic() < deadline, f"no usage row for {model}"
        time.sleep(0.1)


def _chat(e: Ends, model: str, system: str, turn: int) -> dict[str, float]:
    messages: list[Any] = [{"role": "system", "content": system}, {"role": "user", "content": U1}]
    if turn == 1:
        messages[0]["content"] = _text(system, HOUR)
        raw = e.oa.chat.completions.with_raw_response.create(
            model=model, messages=messages, extra_body={"usage": {"include": True}}
        )
        reply = raw.parse()
        assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
        return {
            "prompt": reply.usage.prompt_tokens,
            "cached": reply.usage.prompt_tokens_details.cached_tokens or 0,
            "cost": float(raw.headers["x-tokenrelay-cost"]),
            "usage.cost": (reply.usage.model_extra or {})["cost"],
        }
    messages += [{"role": "assistant", "content": U1}, {"role": "user", "content": _text(U2, FIVE)}]
    stream = e.oa.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    usage = [c.usage for c in stream if c.usage is not None][-1]
    assert usage.prompt_tokens_details is not None
    return {"prompt": usage.prompt_tokens, "cached": usage.prompt_tokens_details.cached_tokens or 0}


def _responses(e: Ends, model: str, system: str, turn: int) -> dict[str, float]:
    items: list[Any] = [{"role": "system", "content": system}, {"role": "user", "content": U1}]
    if turn == 1:
        items[0]["content"] = _text(system, HOUR, "input_text")
        raw = e.oa.responses.with_raw_response.create(model=model, input=items)
        usage = raw.parse().usage
        assert usage is not None
        return {
            "prompt": usage.input_tokens,
            "cached": usage.input_tokens_details.cached_tokens,
            "cost": float(raw.headers["x-tokenrelay-cost"]),
        }
    else:
        last = _text(U2, FIVE, "input_text")
        items += [{"role": "assistant", "content": U1}, {"role": "user", "content": last}]
        stream = e.oa.responses.create(model=model, input=items, stream=True)
        done = [ev for ev in stream if ev.type == "response.completed"]
        usage = done[-1].response.usage
    assert usage is not None
    return {"prompt": usage.input_tokens, "cached": usage.input_tokens_details.cached_tokens}


def _anthropic(e: Ends, model: str, system: str, turn: int) -> dict[str, float]:
    if turn == 1:
        blocks: Any = _text(system, HOUR)
        raw = e.an.messages.with_raw_response.create(
            model=model,
            max_tokens=64,
            system=blocks,
            messages=[{"role": "user", "content": U1}],
            extra_body={"usage": {"include": True}},
        )
        u = raw.parse().usage
        split = u.cache_creation
        return {
            "prompt": u.input_tokens
            + (u.cache_read_input_tokens or 0)
            + (u.cache_creation_input_tokens or 0),
            "cached": u.cache_read_input_tokens or 0,
            "write": u.cache_creation_input_tokens or 0,
            "write_1h": split.ephemeral_1h_input_tokens if split is not None else 0,
            "cost": float(raw.headers["x-tokenrelay-cost"]),
            "usage.cost": (u.model_extra or {})["cost"],
        }
    last = _text(U2, FIVE)
    messages: Any = [
        {"role": "user", "content": U1},
        {"role": "assistant", "content": U1},
        {"role": "user", "content": last},
    ]
    with e.an.messages.stream(
        model=model, max_tokens=64, system=system, messages=messages
    ) as stream:
        u = stream.get_final_message().usage
    return {
        "prompt": u.input_tokens
        + (u.cache_read_input_tokens or 0)
        + (u.cache_creation_input_tokens or 0),
        "cached": u.cache_read_input_tokens or 0,
        "write": u.cache_creation_input_tokens or 0,
    }


CALL = {"chat": _chat, "responses": _responses, "anthropic": _anthropic}


@pytest.mark.parametrize("upstream", tuple(PROVIDER))
@pytest.mark.parametrize("client", CLIENTS)
def test_cache_reads_and_writes_are_counted_once_priced_by_kind_and_reported(
    ends: Ends, client: str, upstream: str
) -> None:
    tag = next(_tags)
    system = f"you are a careful assistant for conversation {client}{upstream}{tag}"
    assert len(system.split()) == 8
    for turn, want in enumerate(expected(upstream), start=1):
        model = f"{PROVIDER[upstream]}/echo?cache=1&ttft=0.00{tag:04d}{turn}"
        seen = CALL[client](ends, model, system, turn)
        # the client's own fields: the whole prompt, and the cached part of it
        assert seen["prompt"] == want.input, (turn, seen)
        assert seen["cached"] == want.cached, (turn, seen)
        if "write" in seen:
            assert seen["write"] == want.write, (turn, seen)
            if "write_1h" in seen:
                assert seen["write_1h"] == want.write_1h, (turn, seen)
        for field in ("cost", "usage.cost"):  # the bill of a non-streamed answer
            if field in seen:
                assert seen[field] == pytest.approx(want.cost), (turn, field, seen)
        row = _row(ends.gateway, model)
        got = (
            row["input_tokens"],
            row["output_tokens"],
            row["cached_tokens"],
            row["cache_write_tokens"],
            row["cache_write_1h_tokens"],
        )
        assert got == (want.input, want.output, want.cached, want.write, want.write_1h), turn
        assert row["cost_usd"] == pytest.approx(want.cost), turn
        assert row["cache_saved_usd"] == pytest.approx(want.saved), turn
