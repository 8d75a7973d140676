"""The pure parts of prompt caching: the price of each kind of token, Anthropic's
``cache_creation`` split read and written, the canonical convention across codecs, and
conversation affinity's choice (sticks while healthy, moves only when it must, spreads
by weight)."""

from __future__ import annotations

import math
from collections import Counter

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from tokenrelay.affinity import Conversation, conversation_key
from tokenrelay.events import ChatRequest, Message, TextPart, Usage
from tokenrelay.pricing import DEFAULT_PRICES, Price, price_usage, saved_by_cache
from tokenrelay.protocols.anthropic.wire import UsageState, UsageView, usage_to_wire
from tokenrelay.protocols.openai import stream as openai_stream
from tokenrelay.protocols.responses import wire as responses_wire
from tokenrelay.router import Candidate, Deployment, Plan, Timeouts

PER_TOKEN = Price(input=2e6, output=10e6, cached_input=0.2e6, cache_write=2.5e6, cache_write_1h=4e6)


def test_each_kind_has_its_rate() -> None:
    # 100 prompt tokens: 50 read, 20 written for 5 minutes, 10 for an hour, 20 plain
    usage = Usage(input=100, output=3, cached=50, cache_write=30, cache_write_1h=10)
    assert usage.cache_write_5m == 20
    # 20 x 2 + 50 x 0.2 + 20 x 2.5 + 10 x 4 + 3 x 10 = 40 + 10 + 50 + 40 + 30
    assert price_usage(PER_TOKEN, usage) == 170.0
    # the same tokens all plain: 100 x 2 + 30 = 230, so caching saved 60
    assert saved_by_cache(PER_TOKEN, usage) == 60.0


def test_an_unknown_one_hour_rate_is_twice_the_input_rate() -> None:
    price = Price(input=3e6, output=15e6)
    assert price_usage(price, Usage(input=10, cache_write=10, cache_write_1h=10)) == 60.0


def test_shipped_anthropic_prices_have_both_write_rates() -> None:
    for name in ("claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"):
        p = DEFAULT_PRICES[name]
        assert p.input is not None and p.cache_write is not None
        assert math.isclose(p.cache_write, 1.25 * p.input)
        assert p.cache_write_1h is not None and math.isclose(p.cache_write_1h, 2 * p.input)


def _view(raw: dict[str, object]) -> UsageView:
    return msgspec.convert(raw, UsageView)


def test_anthropic_cache_creation_is_read_apart_and_written_back() -> None:
    raw = {
        "input_tokens": 5,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 30,
        "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
        "output_tokens": 7,
    }
    usage = UsageState().update(_view(raw))
    assert (usage.input, usage.cached, usage.cache_write, usage.cache_write_1h) == (
        135,
        100,
        30,
        20,
    )
    assert usage_to_wire(usage) == raw
    # the split alone (no total) still counts
    only = UsageState().update(_view({"input_tokens": 1, "cache_creation": raw["cache_creation"]}))
    assert (only.input, only.cache_write, only.cache_write_1h) == (31, 30, 20)


counts = st.integers(0, 10_000)


@given(plain=counts, read=counts, short=counts, hour=counts, out=counts)
def test_every_codec_keeps_the_convention(
    plain: int, read: int, short: int, hour: int, out: int
) -> None:
    """A cached or written token is in ``input`` once, whichever wire it crossed."""
    usage = Usage(
        input=plain + read + short + hour,
        output=out,
        cached=read,
        cache_write=short + hour,
        cache_write_1h=hour,
    )
    anthropic = UsageState().update(_view(usage_to_wire(usage)))
    assert anthropic == usage
    chat = openai_stream.usage_from_wire(openai_stream.usage_to_wire(usage))
    assert (chat.input, chat.cached, chat.cache_write) == (usage.input, read, short + hour)
    responses = responses_wire.usage_from_wire(responses_wire.usage_to_wire(usage))
    assert responses is not None
    assert (responses.input, responses.cached, responses.cache_write) == (
        usage.input,
        read,
        short + hour,
    )
    assert price_usage(PER_TOKEN, chat) is not None


# --- affinity -----------------------------------------------------------------------


class _Provider:
    def __init__(self, name: str) -> None:
        self.name = name


def _candidates(n: int, weights: list[float] | None = None) -> list[Candidate]:
    return [
        Candidate(Deployment(_Provider(f"p{i}"), "m"), (weights or [1.0] * n)[i], Timeouts())  # type: ignore[arg-type]
        for i in range(n)
    ]


def _request(system: str, text: str, **extra: object) -> ChatRequest:
    return ChatRequest(
        model="m",
        messages=[Message("system", [TextPart(system)]), Message("user", [TextPart(text)])],
        **extra,  # type: ignore[arg-type]
    )


def _pick(group: list[Candidate], request: ChatRequest, session: str | None = None) -> Candidate:
    chosen = Plan("m", [group], conversation=Conversation(request, session)).next()
    assert chosen is not None
    return chosen


def test_the_conversation_key_in_order_of_preference() -> None:
    base = _request("sys", "hi")
    assert conversation_key(base) == conversation_key(_request("sys", "hi"))
    assert conversation_key(base) != conversation_key(_request("sys", "other"))
    assert conversation_key(base, "sess") == "s:sess"
    assert conversation_key(_request("sys", "hi", user="u1"), "sess") == "s:sess"
    assert conversation_key(_request("sys", "hi", user="u1")) == "u:u1"
    hinted = _request("sys", "hi", prompt_cache_key="pk")
    assert conversation_key(hinted, "sess") == "k:pk"
    # later turns keep the key of the first
    longer = _request("sys", "hi")
    longer.messages += [Message("assistant", [TextPart("a")]), Message("user", [TextPart("b")])]
    assert conversation_key(longer) == conversation_key(base)


def test_a_conversation_sticks_while_healthy_and_moves_only_when_out() -> None:
    group = _candidates(4)
    talks = [_request(f"system {i}", "hello") for i in range(200)]
    first = {i: _pick(group, t) for i, t in enumerate(talks)}
    assert all(_pick(group, t) is first[i] for i, t in enumerate(talks))  # sticks
    out = group[0]
    for _ in range(10):
        out.deployment.breaker.failure()
    assert not out.deployment.breaker.allows()
    moved = {i: _pick(group, t) for i, t in enumerate(talks)}
    for i in first:
        if first[i] is out:
            assert moved[i] is not out
        else:
            assert moved[i] is first[i]  # only the out deployment's conversations move
    # and a failed attempt moves the request to its next-ranked deployment
    healthy = _candidates(3)
    plan = Plan("m", [healthy], conversation=Conversation(talks[0]))
    a, b = plan.next(), plan.next()
    assert a is not None and b is not None and a is not b


def test_conversations_spread_by_weight() -> None:
    group = _candidates(2, [1.0, 3.0])
    seen = Counter(_pick(group, _request(f"s{i}", "u")).weight for i in range(2000))
    assert 0.6 < seen[3.0] / 2000 < 0.9  # 0.75 expected


# --- hints across protocols -----------------------------------------------------------


def test_cache_hints_cross_protocols_where_the_target_understands_them() -> None:
    from tokenrelay.protocols.anthropic import translate as to_anthropic
    from tokenrelay.protocols.gemini import codec as to_gemini
    from tokenrelay.protocols.openai import codec as chat
    from tokenrelay.protocols.openai import translate as to_chat
    from tokenrelay.protocols.responses import request as responses
    from tokenrelay.protocols.responses import translate as to_responses

    mark = {"type": "ephemeral", "ttl": "1h"}
    body = {
        "model": "m",
        "prompt_cache_key": "conv-1",
        "prompt_cache_retention": "24h",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "sys", "cache_control": mark}]},
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
            },
        ],
    }
    canon = chat.decode_request(body)
    canon.source = None  # as a client of another protocol would give it
    sent = to_responses.encode_request(canon, "m")
    assert (sent["prompt_cache_key"], sent["prompt_cache_retention"]) == ("conv-1", "24h")
    ant = to_anthropic.encode_request(canon, "m")
    assert ant["system"] == [{"type": "text", "text": "sys", "cache_control": mark}]
    assert ant["messages"][0]["content"] == [
        {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}
    ]
    assert "prompt_cache_key" not in ant
    gem = to_gemini.encode_request(canon, "m")
    assert "cache_control" not in str(gem) and "prompt_cache" not in str(gem)
    back = responses.decode_request({"model": "m", "input": "hi", "prompt_cache_key": "conv-2"})
    back.source = None
    assert to_chat.encode_request(back, "m")["prompt_cache_key"] == "conv-2"
    # and without hints, the Anthropic system prompt stays a plain string
    plain = chat.decode_request(
        {
            "model": "m",
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
        }
    )
    plain.source = None
    assert to_anthropic.encode_request(plain, "m")["system"] == "s"
