"""What a request is charged, for every way it can end, over every client x upstream
pair: real gateway and fake-upstream processes, the official ``openai`` and
``anthropic`` SDKs as clients, the usage row read back from the database.

The rule (README, "Usage and cost"): the upstream's own counts when it sent its final
ones; otherwise what it did count (input first, on Anthropic and Gemini) with the rest
estimated from what was sent (the prompt) and what was streamed, marked estimated.
The fake upstream's log says what it actually sent of each stream (``sent``); the
gateway may have read a little less of it when the client stopped it (frames in
flight), never more, and never less than what the client itself received.

Then: a key's tpm and budget are charged those same numbers after a stop.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway
from support.usage_rows import rows

from tokenrelay.fold import CHARS_PER_TOKEN

pytestmark = pytest.mark.timeout(180)

MASTER = "master-" + "u" * 32
PROVIDER = {"openai": "fake", "anthropic": "fakeant", "gemini": "fakegem"}
CLIENTS = ("openai", "anthropic")
UPSTREAMS = tuple(PROVIDER)
ENDINGS = ("complete", "cancel", "drop", "leave", "cut")  # leave: a non-streaming client
PROMPT = "how many tokens does this prompt take"  # 7 words for the fake's tokenizer
_tags = itertools.count(1)


def tokens(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


@dataclass
class Bench:
    gateway: Gateway
    fake: FakeUpstream
    key: str
    http: httpx.Client

    def oa(self, key: str | None = None, timeout: float = 20) -> openai.OpenAI:
        return self._oa.with_options(api_key=key or self.key, timeout=timeout)

    def an(self, key: str | None = None, timeout: float = 20) -> anthropic.Anthropic:
        return self._an.with_options(api_key=key or self.key, timeout=timeout)

    def __post_init__(self) -> None:  # one of each (a new client builds an SSL context)
        self._oa = openai.OpenAI(base_url=self.gateway.base_url, api_key=self.key, max_retries=0)
        self._an = anthropic.Anthropic(
            base_url=f"{self.gateway.url}/anthropic", api_key=self.key, max_retries=0
        )

    def cancel(self, stream_id: str, key: str | None = None) -> None:
        reply = self.http.post(
            f"{self.gateway.base_url}/streams/{stream_id}/cancel",
            headers={"Authorization": f"Bearer {key or self.key}"},
        )
        assert reply.status_code == 200, reply.text

    def sent(self, upstream_model: str) -> dict[str, Any]:
        """The fake's record of the (one) request for ``upstream_model``, once over."""
        deadline = time.monotonic() + 15
        while True:
            entries = [
                e
                for e in self.http.get(f"{self.fake.base_url}/_fake/log").json()
                if e.get("model") == upstream_model
            ]
            if entries and all(e["ended"] is not None for e in entries):
                assert len(entries) == 1, "one upstream request"
                return dict(entries[0])
            assert time.monotonic() < deadline, f"the fake saw no end of {upstream_model}"
            time.sleep(0.05)

    def row(self, model: str) -> dict[str, Any]:
        deadline = time.monotonic() + 15
        while True:
            found = [r for r in rows(self.gateway.config["database_url"]) if r["model"] == model]
            if found:
                assert len(found) == 1, "one row per request"
                return found[0]
            assert time.monotonic() < deadline, f"no usage row for {model}"
            time.sleep(0.1)


def new_key(gw: Gateway, **spec: Any) -> str:
    reply = httpx.post(
        f"{gw.url}/admin/keys",
        json={"name": "usage", **spec},
        headers={"Authorization": f"Bearer {MASTER}"},
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["secret"])


@pytest.fixture(scope="module")
def bench(workdir: Path, fake: FakeUpstream) -> Iterator[Bench]:
    config = gateway_config(
        fake,
        master_key=MASTER,
        database_url=f"sqlite:///{workdir}/usage-endings-{time.monotonic_ns()}.db",
        keepalive_interval=0.2,
        streams={"grace": 0},
        usage={"flush_interval": 0.05},
        retries={"backoff_base": 0.01},
        prices={"gen/*": {"input": 1_000_000, "output": 1_000_000}},  # $1 a token
    )
    gw = start_gateway(workdir, config)
    fake.clear()  # a short log: each case reads it
    try:
        with httpx.Client(timeout=10) as http:
            yield Bench(gw, fake, new_key(gw), http)
    finally:
        gw.proc.stop()


# --- one request, ended one way ----------------------------------------------------------


@dataclass
class Seen:
    """What the client saw: the characters of content it received."""

    chars: int = 0


def _openai_stream(b: Bench, model: str, stop_after: int | None, how: str, seen: Seen) -> None:
    raw = b.oa().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    stream = raw.parse()
    chunks = 0
    try:
        for chunk in stream:
            for choice in chunk.choices:
                seen.chars += len(choice.delta.content or "")
                chunks += bool(choice.delta.content)
            if stop_after is not None and chunks >= stop_after:
                if how == "drop":
                    return
                b.cancel(raw.headers["x-stream-id"])
                stop_after = None  # read on: the stream ends properly
    except openai.APIError:
        assert how == "cut", "only a cut stream ends with an error"
    finally:
        stream.close()


def _anthropic_stream(b: Bench, model: str, stop_after: int | None, how: str, seen: Seen) -> None:
    raw = b.an().messages.with_raw_response.create(
        model=model, max_tokens=4096, messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    stream = raw.parse()
    chunks = 0
    try:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                seen.chars += len(event.delta.text)
                chunks += 1
            if stop_after is not None and chunks >= stop_after:
                if how == "drop":
                    return
                b.cancel(raw.headers["x-stream-id"])
                stop_after = None
    except anthropic.APIError:
        assert how == "cut", "only a cut stream ends with an error"
    finally:
        stream.close()


def _whole(b: Bench, client: str, model: str, timeout: float) -> None:
    """A non-streaming call; with a short ``timeout`` the client leaves before the end."""
    messages: Any = [{"role": "user", "content": PROMPT}]
    if client == "openai":
        b.oa(timeout=timeout).chat.completions.create(model=model, messages=messages)
    else:
        b.an(timeout=timeout).messages.create(model=model, max_tokens=4096, messages=messages)


@dataclass(frozen=True)
class Case:
    client: str
    upstream: str
    ending: str
    n: int  # gen/N
    at: int  # cut: events the upstream sends; cancel/drop: content chunks the client reads
    counts: bool  # the upstream reports usage
    streamed: bool  # the client streams (complete and cut: either)


def events_of(upstream: str, n: int, counts: bool) -> int:
    """How many SSE events the fake's gen/N stream has on this upstream's wire."""
    if upstream == "openai":
        return n + 3 + counts  # role, n texts, finish, (usage), [DONE]
    if upstream == "anthropic":
        return n + 6  # message_start, block start, ping, n deltas, block stop, delta, stop
    return n  # gemini: one chunk per text


def run(b: Bench, case: Case) -> tuple[dict[str, Any], dict[str, Any], Seen]:
    tag = next(_tags)
    options = [f"ttft=0.0000{tag:04d}"]  # makes the model string this case's alone
    n = case.n
    if case.ending in ("cancel", "drop", "leave"):
        n, options = 400, [*options, "gap=0.01"]
    if case.ending == "cut":
        options.append(f"drop_after={case.at}")
    if not case.counts:
        options.append("no_usage=1")
    upstream_model = f"gen/{n}?" + "&".join(options)
    model = f"{PROVIDER[case.upstream]}/{upstream_model}"
    seen = Seen()
    if case.ending == "leave":
        with pytest.raises((openai.APITimeoutError, anthropic.APITimeoutError)):
            _whole(b, case.client, model, timeout=0.5)
    elif not case.streamed:  # complete, or cut (the gateway then retries: see below)
        try:
            _whole(b, case.client, model, timeout=20)
        except (openai.APIStatusError, anthropic.APIStatusError):
            assert case.ending == "cut"
    else:
        stop_after = case.at if case.ending in ("cancel", "drop") else None
        stream = _openai_stream if case.client == "openai" else _anthropic_stream
        stream(b, model, stop_after, case.ending, seen)
    if case.ending == "cut" and not case.streamed:
        return b.row(model), {}, seen
    return b.row(model), b.sent(upstream_model), seen


def check(case: Case, row: dict[str, Any], sent: dict[str, Any], seen: Seen) -> None:
    s = sent.get("sent") or {}
    got = (row["input_tokens"], row["output_tokens"], row["estimated"])
    prompt = tokens(len(PROMPT))
    if case.ending == "cut" and not case.streamed:
        # nothing reached the client: each failed attempt is retried, none is charged
        assert row["outcome"] != "ok" and row["attempts"] == 4
        assert got == (0, 0, False), (case, row)
        return
    if s["final"] and s["output"] is not None:  # the upstream's whole counts arrived
        assert got == (s["input"], s["output"], False), (case, s, row)
        assert row["cost_usd"] == pytest.approx(s["input"] + s["output"])
        return
    assert row["estimated"], (case, s, row)
    assert row["input_tokens"] == (s["input"] if s["input"] is not None else prompt), (case, s)
    most = max(s["output"] or 0, tokens(s["chars"]))
    if case.ending in ("complete", "cut"):  # the gateway read all that was sent
        assert row["output_tokens"] == most, (case, s, row)
    else:  # stopped: at least what the client got, at most what was sent
        least = max(s["output"] or 0, tokens(seen.chars))
        assert least <= row["output_tokens"] <= most, (case, s, row, seen)
    assert row["cost_usd"] == pytest.approx(row["input_tokens"] + row["output_tokens"])


def cases() -> st.SearchStrategy[Case]:
    @st.composite
    def build(draw: Callable[[st.SearchStrategy[Any]], Any]) -> Case:
        client = draw(st.sampled_from(CLIENTS))
        upstream = draw(st.sampled_from(UPSTREAMS))
        ending = draw(st.sampled_from(ENDINGS))
        n = draw(st.integers(1, 12))
        counts = draw(st.booleans())
        streamed = ending in ("cancel", "drop") or (ending != "leave" and draw(st.booleans()))
        at = draw(st.integers(1, 6))
        if ending == "cut":
            at = draw(st.integers(1, events_of(upstream, n, counts)))
        return Case(client, upstream, ending, n, at, counts, streamed)

    return build()


def _every_pair_and_ending(test: Callable[..., None]) -> Callable[..., None]:
    """Each ending over each pair at least once, whatever the random draw."""
    for client, upstream, ending in itertools.product(CLIENTS, UPSTREAMS, ENDINGS):
        streamed = ending != "leave"
        at = 3 if ending != "cut" else max(1, events_of(upstream, 5, True) // 2)
        test = example(case=Case(client, upstream, ending, 5, at, True, streamed))(test)
    for upstream in UPSTREAMS:  # an upstream that counts nothing, whole answers not streamed
        test = example(case=Case("openai", upstream, "complete", 5, 1, False, False))(test)
    return test


@settings(
    max_examples=10,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@_every_pair_and_ending
@given(case=cases())
def test_every_ending_is_charged_what_the_upstream_sent(bench: Bench, case: Case) -> None:
    row, sent, seen = run(bench, case)
    check(case, row, sent, seen)


# --- limits are charged the same numbers ---------------------------------------------------


def _stopped_stream(b: Bench, key: str, model: str, chunks: int) -> None:
    raw = b.an(key).messages.with_raw_response.create(
        model=model, max_tokens=10, messages=[{"role": "user", "content": "x"}], stream=True
    )
    seen = 0
    with raw.parse() as stream:
        for event in stream:
            if event.type == "content_block_delta":
                seen += 1
                if seen == chunks:
                    b.cancel(raw.headers["x-stream-id"], key)


def test_tpm_and_budget_are_charged_a_stopped_stream(bench: Bench) -> None:
    """Stopped after ~100 chunks on an Anthropic upstream (whose message_start says
    output_tokens: 1): the key's tpm window and its budget take the same estimated
    counts as the row, so the next request is refused."""
    for limit in ({"tpm": 100}, {"budget_usd": 60.0}):
        key = new_key(bench.gateway, **limit)
        model = f"fakeant/gen/400?gap=0.005&ttft=0.0000{next(_tags):04d}"
        _stopped_stream(bench, key, model, 100)
        row = bench.row(model)
        charged = row["input_tokens"] + row["output_tokens"]
        assert row["estimated"] and row["outcome"] == "cancelled"
        assert charged > 100 and row["cost_usd"] == pytest.approx(charged)
        time.sleep(0.3)  # the limiter's release runs just after the row is queued
        with pytest.raises(anthropic.RateLimitError) as info:
            bench.an(key).messages.create(
                model="fakeant/gen/2", max_tokens=10, messages=[{"role": "user", "content": "x"}]
            )
        assert ("tpm" if "tpm" in limit else "budget") in str(info.value)
