"""The Anthropic Messages codec: recorded streams, the passthrough, the encoder against
our decoder and against the official SDK's accumulator, and the request codec."""

from __future__ import annotations

import itertools
import json
import re
import string
from pathlib import Path
from typing import Any

import anthropic
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.paths import fixture_files, fixtures_dir

from tokenrelay.events import (
    ERROR_STATUS,
    ChatRequest,
    Error,
    Event,
    Finish,
    GatewayError,
    ImagePart,
    Message,
    Part,
    ReasoningDelta,
    ReasoningPart,
    Start,
    TextDelta,
    TextPart,
    Tool,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    Usage,
)
from tokenrelay.fold import Fold, Tally
from tokenrelay.protocols.anthropic import codec
from tokenrelay.protocols.blocks import Args, CloseCall, OpenCall, ToolCallSequencer
from tokenrelay.sse import ServerSentEvent, SSEDecoder

try:  # the SDK's own HTTP client package (httpx2 since anthropic 2.x)
    import httpx2 as sdk_http
except ImportError:  # pragma: no cover
    import httpx as sdk_http  # type: ignore[no-redef]

BASE64 = string.ascii_letters + string.digits + "+/="
FIXTURES = fixture_files("anthropic/*.sse")
FIXTURE_IDS = [p.name for p in FIXTURES]
WIRE_FINISH = {"end_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls"}
EXPECT_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
EXPECT_STOP["content_filter"] = "refusal"


def _read(path: Path) -> bytes:
    fixtures_dir()  # skip (or fail under CI) without ../shared
    return path.read_bytes()


def _frames(raw: bytes, cut: int | None = None) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    if cut is None:
        return decoder.feed(raw) + decoder.flush()
    return decoder.feed(raw[:cut]) + decoder.feed(raw[cut:]) + decoder.flush()


def _decode(frames: list[ServerSentEvent]) -> Fold:
    decoder = codec.stream_decoder()
    fold = Fold()
    for frame in frames:
        fold.extend(decoder.feed(frame))
    return fold.extend(decoder.close())


def _expected(raw: bytes) -> dict[str, Any]:
    """What a recorded stream holds, from its raw JSON, without the codec."""
    text, thinking, signature = [], [], []
    tools: dict[int, list[Any]] = {}
    usage: dict[str, int] = {}
    stop = None
    for chunk in raw.decode().split("\n\n"):
        data = [line[6:] for line in chunk.split("\n") if line.startswith("data: ")]
        if not data:
            continue
        event = json.loads(data[0])
        kind = event["type"]
        if kind == "message_start":
            usage.update({k: v for k, v in event["message"]["usage"].items() if type(v) is int})
        elif kind == "content_block_start" and event["content_block"]["type"] == "tool_use":
            block = event["content_block"]
            tools[event["index"]] = [block["id"], block["name"], []]
        elif kind == "content_block_delta":
            delta = event["delta"]
            if delta["type"] == "text_delta":
                text.append(delta["text"])
            elif delta["type"] == "thinking_delta":
                thinking.append(delta["thinking"])
            elif delta["type"] == "signature_delta":
                signature.append(delta["signature"])
            elif delta["type"] == "input_json_delta":
                tools[event["index"]][2].append(delta["partial_json"])
        elif kind == "message_delta":
            stop = event["delta"]["stop_reason"]
            usage.update({k: v for k, v in event["usage"].items() if type(v) is int})
    cache_read = usage.get("cache_read_input_tokens", 0)
    cache_write = usage.get("cache_creation_input_tokens", 0)
    return {
        "text": "".join(text),
        "thinking": "".join(thinking),
        "signature": "".join(signature) or None,
        "tools": [(i, n, json.loads("".join(a))) for i, n, a in tools.values()],
        "finish": WIRE_FINISH[stop] if stop else None,
        "usage": Usage(
            input=usage["input_tokens"] + cache_read + cache_write,
            output=usage["output_tokens"],
            cached=cache_read,
            cache_write=cache_write,
        ),
    }


def _summary(fold: Fold) -> dict[str, Any]:
    choice = fold.ordered_choices()[0]
    return {
        "text": choice.text,
        "thinking": choice.reasoning,
        "signature": choice.reasoning_signature,
        "tools": [(c.id, c.name, json.loads(c.arguments)) for c in choice.ordered_tool_calls()],
        "finish": choice.finish_reason,
        "usage": fold.usage,
    }


# --- recorded streams -------------------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURES, ids=FIXTURE_IDS)
def test_recorded_stream_decodes_to_what_it_holds(path: Path) -> None:
    raw = _read(path)
    fold = _decode(_frames(raw))
    assert fold.error is None
    assert fold.id.startswith("msg_") and fold.model.startswith("claude-")
    assert _summary(fold) == _expected(raw)


@pytest.mark.parametrize("path", FIXTURES, ids=FIXTURE_IDS)
def test_recorded_stream_split_at_every_byte(path: Path) -> None:
    raw = _read(path)
    whole = _summary(_decode(_frames(raw)))
    for cut in range(1, len(raw)):
        assert _summary(_decode(_frames(raw, cut))) == whole, cut


@pytest.mark.parametrize("path", FIXTURES, ids=FIXTURE_IDS)
def test_passthrough_is_byte_exact_but_for_the_model(path: Path) -> None:
    raw = _read(path)
    tally = Tally()
    relay = codec.passthrough(codec.decode_request(_body()), 'my "alias"', tally)
    out = b"".join(b"".join(relay.encode([f])) for f in _frames(raw)) + b"".join(relay.close())
    model = re.search(rb'"model":"([^"]*)"', raw)
    assert model is not None
    assert out == raw.replace(model.group(0), b'"model":"my \\"alias\\""', 1)
    expected = _expected(raw)
    assert tally.error is None and tally.started
    assert tally.usage == expected["usage"] and tally.finish_reason == expected["finish"]
    assert relay.ended and relay.close() == []


def test_passthrough_reports_a_malformed_frame_and_a_truncated_stream() -> None:
    tally = Tally()
    relay = codec.passthrough(codec.decode_request(_body()), "m", tally)
    good = ServerSentEvent('{"type":"ping"}', "ping")
    out = b"".join(
        relay.encode([good, ServerSentEvent('{"type":"content_block_delta",', "x"), good])
    )
    frames = _frames(out)
    assert [f.event for f in frames] == ["ping", "error"]
    assert json.loads(frames[1].data)["error"]["type"] == "api_error"
    assert relay.ended and tally.error is not None and tally.error.code == "upstream_malformed"

    tally = Tally()
    relay = codec.passthrough(codec.decode_request(_body()), "m", tally)
    relay.encode([good])
    assert _frames(b"".join(relay.close()))[0].event == "error"
    assert tally.error is not None and tally.error.code == "upstream_truncated"


def test_passthrough_forwards_an_upstream_error_and_stops() -> None:
    data = (
        '{"type":"error","error":{"details":null,"type":"overloaded_error","message":"Overloaded"}}'
    )
    tally = Tally()
    relay = codec.passthrough(codec.decode_request(_body()), "m", tally)
    out = b"".join(relay.encode([ServerSentEvent(data, "error"), ServerSentEvent("{}", "ping")]))
    assert out == b"event: error\ndata: " + data.encode() + b"\n\n"
    assert relay.ended and relay.close() == []
    assert tally.error == Error("overloaded", "Overloaded", 529, "overloaded_error")


def test_decoder_errors_and_truncation() -> None:
    decoder = codec.stream_decoder()
    data = '{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'
    assert decoder.feed(ServerSentEvent(data, "error")) == [
        Error("rate_limit", "slow down", 429, "rate_limit_error")
    ]
    assert decoder.close() == []
    decoder = codec.stream_decoder()
    assert decoder.feed(ServerSentEvent('{"type": "ping"}', "ping")) == []
    [malformed] = decoder.feed(ServerSentEvent("{not json", "message_start"))
    assert isinstance(malformed, Error) and malformed.code == "upstream_malformed"
    decoder = codec.stream_decoder()
    decoder.feed(ServerSentEvent('{"type":"message_start","message":{"id":"msg_1"}}'))
    [truncated] = decoder.close()
    assert isinstance(truncated, Error) and truncated.code == "upstream_truncated"


def test_decoder_redacted_thinking_and_usage_details() -> None:
    frames = [
        '{"type":"message_start","message":{"id":"msg_1","model":"c","usage":{"input_tokens":5,'
        '"cache_read_input_tokens":100,"cache_creation_input_tokens":7,"output_tokens":1}}}',
        '{"type":"content_block_start","index":0,"content_block":{"type":"redacted_thinking",'
        '"data":"opaque"}}',
        '{"type":"content_block_stop","index":0}',
        '{"type":"message_delta","delta":{"stop_reason":"refusal"},"usage":{"output_tokens":9,'
        '"output_tokens_details":{"thinking_tokens":4}}}',
        '{"type":"message_stop"}',
    ]
    fold = _decode([ServerSentEvent(f) for f in frames])
    assert fold.ordered_choices()[0].reasoning_redacted == "opaque"
    assert fold.ordered_choices()[0].finish_reason == "content_filter"
    assert fold.usage == Usage(input=112, output=9, cached=100, reasoning=4, cache_write=7)
    assert fold.error is None


# --- events -> our encoder -> our decoder ---------------------------------------------

names = st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**9), 10**9) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
arguments = st.dictionaries(st.text(max_size=6), json_values, max_size=4)


@st.composite
def fragments(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=5)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def tool_calls(draw: st.DrawFn) -> tuple[list[Event], list[tuple[str, str, Any]]]:
    """Parallel calls with fragmented arguments, interleaved; each call's first fragment
    (with id and name) comes after the first fragment of every call before it."""
    calls = draw(st.lists(st.tuples(names, arguments), max_size=3))
    queues: list[list[Event]] = []
    for k, (name, args) in enumerate(calls):
        parts = draw(fragments(msgspec.json.encode(args).decode()))
        first = ToolCallDelta(k, f"toolu_{k}x", name, parts[0])
        queues.append([first, *(ToolCallDelta(k, arguments=p) for p in parts[1:])])
    events: list[Event] = []
    started = 0
    while any(queues):
        live = [k for k, q in enumerate(queues) if q and k < started]
        if started < len(queues):
            live.append(started)
        k = draw(st.sampled_from(live))
        started = max(started, k + 1)
        events.append(queues[k].pop(0))
    return events, [(f"toolu_{k}x", n, a) for k, (n, a) in enumerate(calls)]


@st.composite
def event_streams(draw: st.DrawFn) -> tuple[list[list[Event]], dict[str, Any]]:
    """Random canonical streams (in random batches) and what they hold."""
    thinking: list[str] = draw(st.lists(st.text(max_size=8), max_size=4))
    signature: list[str] = draw(st.lists(st.text(BASE64, min_size=1, max_size=6), max_size=3))
    redacted = draw(st.none() | st.text(min_size=1, max_size=10))
    text: list[str] = draw(st.lists(st.text(max_size=10), max_size=5))
    tools, expected_tools = draw(tool_calls())
    reasoning: list[Event] = [ReasoningDelta(t) for t in thinking]
    reasoning += [ReasoningDelta(signature=s) for s in signature]
    segments: dict[str, list[Event]] = {
        "reasoning": reasoning,
        "redacted": [ReasoningDelta(redacted=redacted)] if redacted else [],
        "text": [TextDelta(t) for t in text],
        "tools": tools,
    }
    order = draw(st.permutations(list(segments)))
    reason = draw(st.sampled_from(["stop", "length", "tool_calls", "content_filter"]))
    cached, written, fresh = (draw(st.integers(0, 10**6)) for _ in range(3))
    output = draw(st.integers(0, 10**6))
    usage = Usage(
        input=cached + written + fresh,
        output=output,
        cached=cached,
        cache_write=written,
        reasoning=draw(st.integers(0, output)),
    )
    start = Start(draw(st.sampled_from(["msg_01abc", "chatcmpl-9", ""])), "upstream-model")
    events: list[Event] = [start]
    for segment in order:
        events.extend(segments[segment])
    matched = draw(st.none() | st.text(min_size=1, max_size=6)) if reason == "stop" else None
    events += [Finish(reason, stop_sequence=matched), usage]
    cuts = sorted(draw(st.lists(st.integers(0, len(events)), max_size=6)))
    bounds = [0, *cuts, len(events)]
    batches = [events[a:b] for a, b in itertools.pairwise(bounds)]
    expected = {
        "text": "".join(text),
        "thinking": "".join(thinking),
        "signature": "".join(signature) or None,
        "redacted": redacted,
        "tools": expected_tools,
        "finish": reason,
        "stop_sequence": matched,
        "usage": usage,
        "chars": sum(map(len, text + thinking))
        + sum(len(e.arguments) for e in tools if isinstance(e, ToolCallDelta)),
    }
    return batches, expected


def _encode(batches: list[list[Event]], tally: Tally | None = None) -> bytes:
    encoder = codec.stream_encoder(ChatRequest("m", []), "client-model", tally or Tally())
    out = b"".join(b"".join(encoder.encode(batch)) for batch in batches) + b"".join(encoder.close())
    assert encoder.ended and encoder.close() == []
    return out


def _check_wire(frames: list[ServerSentEvent]) -> None:
    """Anthropic's framing rules: named events matching their type, message_start
    first, blocks opened in index order and never overlapping, message_stop last."""
    data = [json.loads(f.data) for f in frames]
    assert all(f.event == d["type"] for f, d in zip(frames, data, strict=True))
    assert [d["type"] for d in data[:1] + data[-2:]] == [
        "message_start",
        "message_delta",
        "message_stop",
    ]
    open_index, next_index = None, 0
    for d in data[1:-2]:
        if d["type"] == "content_block_start":
            assert open_index is None and d["index"] == next_index
            open_index, next_index = next_index, next_index + 1
        elif d["type"] in ("content_block_delta", "content_block_stop"):
            assert d["index"] == open_index
            if d["type"] == "content_block_stop":
                open_index = None
        else:
            pytest.fail(f"unexpected {d['type']} inside the message")
    assert open_index is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_streams(), st.integers(1, 64))
def test_encoder_round_trips_through_the_decoder(stream: Any, chunk: int) -> None:
    batches, expected = stream
    tally = Tally()
    wire = _encode(batches, tally)
    decoder, frames = SSEDecoder(), []
    for i in range(0, len(wire), chunk):
        frames += decoder.feed(wire[i : i + chunk])
    _check_wire(frames)
    fold = _decode(frames)
    choice = fold.ordered_choices()[0]
    assert fold.error is None and fold.model == "client-model" and fold.id.startswith("msg_")
    assert choice.text == expected["text"]
    assert choice.reasoning == expected["thinking"]
    assert choice.reasoning_signature == expected["signature"]
    assert choice.reasoning_redacted == expected["redacted"]
    calls = [(c.id, c.name, json.loads(c.arguments)) for c in choice.ordered_tool_calls()]
    assert calls == expected["tools"]
    assert choice.finish_reason == expected["finish"]
    assert choice.stop_sequence == expected["stop_sequence"]
    assert fold.usage == expected["usage"]
    assert tally.usage == expected["usage"] and tally.finish_reason == expected["finish"]
    assert tally.output_chars == expected["chars"] and tally.started


def test_encoder_error_mid_stream_and_fail() -> None:
    tally = Tally()
    encoder = codec.stream_encoder(ChatRequest("m", []), "m", tally)
    boom = Error("overloaded", "busy", 529)
    out = b"".join(encoder.encode([Start("x", "u"), TextDelta("hi"), boom, TextDelta("never")]))
    frames = _frames(out)
    assert frames[-1].event == "error"
    assert json.loads(frames[-1].data) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "busy"},
    }
    assert "never" not in out.decode()
    assert encoder.ended and tally.error == boom
    assert encoder.close() == [] and encoder.fail(boom) == []
    encoder = codec.stream_encoder(ChatRequest("m", []), "m", Tally())
    assert _frames(b"".join(encoder.fail(Error("timeout", "slow", 504))))[0].event == "error"


def test_sequencer_streams_sequential_calls_live_and_buffers_interleaved_ones() -> None:
    seq = ToolCallSequencer()
    assert seq.feed(0, "a", "f", '{"x":') == [OpenCall(0, "a", "f"), Args(0, '{"x":')]
    assert seq.feed(1, "b", "g", "{") == []  # call 0 is unfinished: 1 waits
    assert seq.feed(1, None, None, "}") == []
    assert seq.feed(0, None, None, "1}") == [
        Args(0, "1}"),
        CloseCall(0),
        OpenCall(1, "b", "g"),
        Args(1, "{}"),
    ]
    assert seq.feed(2, "c", "h", "{}") == [CloseCall(1), OpenCall(2, "c", "h"), Args(2, "{}")]
    assert seq.feed(0, None, None, " ") == []  # late: dropped
    assert seq.flush() == [CloseCall(2)]


# --- the official SDK's accumulator over our bytes ----------------------------------


def _sdk_stream(wire: bytes) -> Any:
    def serve(request: Any) -> Any:
        return sdk_http.Response(200, headers={"content-type": "text/event-stream"}, content=wire)

    client = anthropic.Anthropic(
        api_key="test",
        base_url="http://gateway.test",
        max_retries=0,
        http_client=sdk_http.Client(transport=sdk_http.MockTransport(serve)),
    )
    with client.messages.stream(
        model="client-model", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        return stream.get_final_message()


def _check_sdk_message(message: Any, expected: dict[str, Any]) -> None:
    blocks = message.content
    assert "".join(b.text for b in blocks if b.type == "text") == expected["text"]
    thinking = [b for b in blocks if b.type == "thinking"]
    assert "".join(b.thinking for b in thinking) == expected["thinking"]
    if expected["signature"]:
        assert [b.signature for b in thinking] == [expected["signature"]]
    redacted = [b.data for b in blocks if b.type == "redacted_thinking"]
    assert redacted == ([expected["redacted"]] if expected["redacted"] else [])
    calls = [(b.id, b.name, b.input) for b in blocks if b.type == "tool_use"]
    assert calls == expected["tools"]
    matched = expected.get("stop_sequence")
    assert message.stop_reason == ("stop_sequence" if matched else EXPECT_STOP[expected["finish"]])
    assert message.stop_sequence == matched
    usage = expected["usage"]
    assert message.model == "client-model"
    assert message.usage.output_tokens == usage.output
    assert message.usage.input_tokens == usage.input - usage.cached - usage.cache_write
    assert message.usage.cache_read_input_tokens == usage.cached
    assert message.usage.cache_creation_input_tokens == usage.cache_write


def test_sdk_accumulates_our_stream() -> None:
    events: list[Event] = [
        Start("chatcmpl-1", "gpt"),
        ReasoningDelta("Let me "),
        ReasoningDelta("think."),
        ReasoningDelta(signature="c2ln"),
        ReasoningDelta(signature="bmF0dXJl"),
        TextDelta("Checking "),
        TextDelta("both."),
        ToolCallDelta(0, "call_a", "weather", '{"city":'),
        ToolCallDelta(1, "call_b", "time", '{"tz": "Europe/'),
        ToolCallDelta(0, arguments=' "Paris"}'),
        ToolCallDelta(1, arguments='Paris"}'),
        Finish("tool_calls"),
        Usage(input=30, output=12, cached=20, cache_write=4),
    ]
    message = _sdk_stream(_encode([events[:3], events[3:9], events[9:]]))
    _check_sdk_message(
        message,
        {
            "text": "Checking both.",
            "thinking": "Let me think.",
            "signature": "c2lnbmF0dXJl",
            "redacted": None,
            "tools": [  # ids on the Anthropic wire look like Anthropic's
                ("toolu_call_a", "weather", {"city": "Paris"}),
                ("toolu_call_b", "time", {"tz": "Europe/Paris"}),
            ],
            "finish": "tool_calls",
            "usage": Usage(input=30, output=12, cached=20, cache_write=4),
        },
    )
    assert message.id.startswith("msg_")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_streams())
def test_sdk_accumulates_random_streams(stream: Any) -> None:
    batches, expected = stream
    _check_sdk_message(_sdk_stream(_encode(batches)), expected)


def test_sdk_raises_our_error_frame() -> None:
    encoder = codec.stream_encoder(ChatRequest("m", []), "m", Tally())
    wire = b"".join(encoder.encode([Start("x", "u"), TextDelta("partial")]))
    wire += b"".join(encoder.fail(Error("overloaded", "Overloaded", 529)))
    with pytest.raises(anthropic.APIStatusError) as caught:
        _sdk_stream(wire)
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


# --- non-streaming body and errors --------------------------------------------------


def test_encode_response_is_the_fold_as_a_message() -> None:
    fold = Fold().extend(
        [
            Start("msg_42", "u"),
            ReasoningDelta("hmm"),
            ReasoningDelta(signature="sig"),
            TextDelta("Hello"),
            ToolCallDelta(0, "toolu_1", "f", '{"a": [1, '),
            ToolCallDelta(0, arguments="2]}"),
            Finish("tool_calls"),
            Usage(input=10, output=5, cached=3),
        ]
    )
    body = codec.encode_response(fold, "alias")
    assert body == {
        "id": "msg_42",
        "type": "message",
        "role": "assistant",
        "model": "alias",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Hello"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 7,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 3,
            "output_tokens": 5,
        },
    }
    message = anthropic.types.Message.model_validate(body)  # the SDK's own model accepts it
    assert message.content[2].input == {"a": [1, 2]}  # type: ignore[union-attr]


def test_every_error_kind_has_an_anthropic_type() -> None:
    documented = {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "timeout_error",
        "overloaded_error",
    }
    for kind in ERROR_STATUS:
        body = codec.error_body(GatewayError(kind, "nope"))
        assert body["type"] == "error" and body["error"]["message"] == "nope"
        assert body["error"]["type"] in documented, kind
    frame = _frames(codec.error_frame(Error("rate_limit", "slow", 429)))[0]
    assert frame.event == "error"
    assert json.loads(frame.data)["error"]["type"] == "rate_limit_error"


def test_decode_error_keeps_status_and_message() -> None:
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    error = codec.decode_error(529, body)
    assert (error.kind, error.status, error.message, error.code) == (
        "overloaded",
        529,
        "Overloaded",
        "overloaded_error",
    )
    billing = codec.decode_error(402, b'{"error":{"type":"billing_error","message":"pay"}}')
    assert (billing.kind, billing.status, billing.message) == ("upstream", 402, "pay")
    assert (
        codec.decode_error(502, b"<html>bad gateway</html>").message == "<html>bad gateway</html>"
    )


def test_url_and_headers() -> None:
    assert (
        codec.url("https://api.anthropic.com/v1/", "m", True)
        == "https://api.anthropic.com/v1/messages"
    )
    assert codec.headers("sk-1") == {"anthropic-version": "2023-06-01", "x-api-key": "sk-1"}
    assert "x-api-key" not in codec.headers(None)


# --- the request codec ----------------------------------------------------------------


def _body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-x",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
    }
    body.update(fields)
    return body


def test_decode_request_maps_every_block() -> None:
    body = _body(
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look:"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAA"},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                    {"type": "document", "source": {"type": "text", "data": "kept in source"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "text", "text": "Calling."},
                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"b": 1, "a": "é"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "is_error": True,
                        "content": [{"type": "text", "text": "boom"}],
                    },
                    {"type": "text", "text": "Thanks"},
                ],
            },
        ],
        tools=[
            {"name": "f", "description": "F.", "input_schema": {"type": "object"}},
            {"type": "web_search_20250305", "name": "web_search"},
        ],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        stop_sequences=["END"],
        temperature=0.5,
        top_k=5,
        thinking={"type": "enabled", "budget_tokens": 2048},
        metadata={"user_id": "u-1"},
        stream=True,
    )
    request = codec.decode_request(body)
    assert request.messages == [
        Message("system", [TextPart("Be brief.")]),
        Message(
            "user",
            [
                TextPart("Look:"),
                ImagePart(data="AAA", media_type="image/png"),
                ImagePart(url="https://x/y.png"),
            ],
        ),
        Message(
            "assistant",
            [
                ReasoningPart("hm", "sig"),
                ReasoningPart(redacted="opaque"),
                TextPart("Calling."),
                ToolCallPart("toolu_1", "f", '{"b":1,"a":"é"}'),
            ],
        ),
        Message(
            "tool",
            [
                ToolResultPart("toolu_1", [TextPart("42")]),
                ToolResultPart("toolu_2", [TextPart("boom")], is_error=True),
            ],
        ),
        Message("user", [TextPart("Thanks")]),
    ]
    assert request.tools == [Tool("f", "F.", {"type": "object"})]
    assert (request.tool_choice, request.parallel_tool_calls) == ("required", False)
    assert request.stop == ["END"] and request.temperature == 0.5 and request.stream
    assert request.reasoning_budget == 2048 and request.user == "u-1"
    assert request.extra == {"top_k": 5}
    assert request.source is not None and request.source.body is body


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"temperature": 1.5}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content[0].text",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "base64", "data": "A"}}],
                    }
                ]
            },
            "messages[0].content[0].source.media_type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_use", "id": "a", "name": "b", "input": {}}],
                    }
                ]
            },
            "messages[0].content[0].type",
        ),
        ({"system": [{"type": "image"}]}, "system[0].type"),
        ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
    ],
)
def test_a_body_the_canon_cannot_read_is_relayed_and_refused_for_translation(
    fields: dict[str, Any], param: str
) -> None:
    """Not judged at the door: an Anthropic upstream gets it as written and judges it;
    translating it for another upstream is the 400 that names the field."""
    body = _body(stream=True, **fields)
    request = codec.decode_request(body)
    assert request.model == "claude-x" and request.stream
    assert request.source is not None and request.source.body is body
    sent = codec.encode_request(request, "real")
    assert sent == {**body, "model": "real", "stream": True}
    with pytest.raises(GatewayError) as caught:
        request.source.check_translatable()
    assert caught.value.kind == "invalid_request" and caught.value.status == 400
    assert caught.value.param == param


def test_a_body_without_messages_is_still_relayed() -> None:
    body = {"model": "claude-x", "max_tokens": 5}
    request = codec.decode_request(body)
    assert codec.encode_request(request, "real") == {**body, "model": "real", "stream": True}
    assert request.source is not None and request.source.untranslatable is not None


@pytest.mark.parametrize("body", [[], "x", {"model": ""}, {"model": 5}, {"messages": []}])
def test_the_door_checks_only_an_object_with_a_model(body: Any) -> None:
    with pytest.raises(GatewayError) as caught:
        codec.decode_request(body)
    assert caught.value.status == 400


def test_claude_code_2_1_body_reads_into_the_canon() -> None:
    """A mid-conversation system message, adaptive thinking at an effort, cache_control,
    context_management: read where the canon has a slot, kept for passthrough."""
    body = _body(
        system=[
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}
        ],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                    {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}},
                ],
            },
            {"role": "system", "content": "Mid-conversation note."},
        ],
        thinking={"type": "adaptive"},
        output_config={"effort": "max"},
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    )
    request = codec.decode_request(body)
    assert request.source is not None and request.source.untranslatable is None
    assert [m.role for m in request.messages] == ["system", "user", "system"]
    assert request.messages[2].parts == [TextPart("Mid-conversation note.")]
    assert request.reasoning_effort == "xhigh" and request.reasoning_budget is None
    assert "context_management" in request.extra  # dropped by the other protocols


def test_same_protocol_request_is_forwarded_as_written() -> None:
    body = _body(top_k=3, messages=[{"role": "user", "content": [{"type": "document", "x": 1}]}])
    sent = codec.encode_request(codec.decode_request(body), "claude-real")
    assert sent == {**body, "model": "claude-real", "stream": True}
    assert body["model"] == "claude-x" and "stream" not in body


def test_same_protocol_drops_thinking_blocks_without_signature() -> None:
    signed = {"type": "thinking", "thinking": "a", "signature": "s"}
    turns: list[dict[str, Any]] = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": [{"type": "thinking", "thinking": "b", "signature": ""}, signed],
        },
        {"role": "user", "content": "again"},
    ]
    body = _body(messages=turns)
    sent = codec.encode_request(codec.decode_request(body), "c")
    assert sent["messages"][1]["content"] == [signed]
    assert len(turns[1]["content"]) == 2  # the client's body is not modified
    plain = _body()
    assert codec.encode_request(codec.decode_request(plain), "c")["messages"] is plain["messages"]


def _canon(**fields: Any) -> ChatRequest:
    return ChatRequest("m", [Message("user", [TextPart("hi")])], **fields)


def test_translation_adjustments() -> None:
    sent = codec.encode_request(
        _canon(temperature=1.7, top_p=0.5, seed=3, stop=["x"], user="u", n=1), "c"
    )
    assert sent == {
        "model": "c",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": codec.DEFAULT_MAX_TOKENS,
        "temperature": 1.0,
        "stop_sequences": ["x"],
        "metadata": {"user_id": "u"},
    }
    thinking = codec.encode_request(
        _canon(reasoning_effort="high", temperature=0.2, top_p=0.97), "c"
    )
    assert thinking["thinking"] == {"type": "enabled", "budget_tokens": codec.EFFORT_BUDGET["high"]}
    assert thinking["max_tokens"] == codec.DEFAULT_MAX_TOKENS + codec.EFFORT_BUDGET["high"]
    assert "temperature" not in thinking and thinking["top_p"] == 0.97
    capped = codec.encode_request(_canon(reasoning_effort="high", max_tokens=3000), "c")
    assert capped["thinking"]["budget_tokens"] == 2999 and capped["max_tokens"] == 3000
    assert "thinking" not in codec.encode_request(
        _canon(reasoning_effort="low", max_tokens=500), "c"
    )
    assert "thinking" not in codec.encode_request(_canon(reasoning_effort="none"), "c")
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}}
    assert codec.encode_request(_canon(response_format=fmt), "c")["output_config"] == {
        "format": {"type": "json_schema", "schema": {"type": "object"}}
    }
    assert "output_config" not in codec.encode_request(
        _canon(response_format={"type": "json_object"}), "c"
    )
    assert codec.encode_request(_canon(parallel_tool_calls=False), "c")["tool_choice"] == {
        "type": "auto",
        "disable_parallel_tool_use": True,
    }
    adjusted = {a.field for a in codec.ADJUSTMENTS}
    assert {"n > 1", "seed", "temperature > 1", "response_format json_object"} <= adjusted


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (_canon(n=2), "n"),
        (_canon(reasoning_effort="extreme"), "reasoning_effort"),
        (
            ChatRequest(
                "m",
                [
                    Message("user", [TextPart("q")]),
                    Message("assistant", [ToolCallPart("t", "f", "{bad")]),
                ],
            ),
            "messages[1].tool_calls",
        ),
        (
            ChatRequest(
                "m",
                [
                    Message("user", [TextPart("q")]),
                    Message("assistant", [ToolCallPart("t", "f", "[1]")]),
                ],
            ),
            "messages[1].tool_calls",
        ),
    ],
)
def test_translation_rejects_what_it_cannot_express(request_: ChatRequest, param: str) -> None:
    with pytest.raises(GatewayError) as caught:
        codec.encode_request(request_, "c")
    assert caught.value.kind == "invalid_request" and caught.value.param == param


def test_translation_merges_turns_and_hoists_system() -> None:
    request = ChatRequest(
        "m",
        [
            Message("system", [TextPart("A")]),
            Message("user", [TextPart("q1")]),
            Message("user", [TextPart("q2"), TextPart("")]),
            Message("assistant", [ReasoningPart("no signature"), ToolCallPart("t1", "f", "")]),
            Message("tool", [ToolResultPart("t1", [TextPart("r1")], name="f")]),
            Message("tool", [ToolResultPart("t2", [])]),
            Message("system", [TextPart("B"), ImagePart(url="https://x")]),
            Message("user", [TextPart("more")]),
        ],
    )
    sent = codec.encode_request(request, "c")
    assert sent["system"] == [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]
    assert sent["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "q1"}, {"type": "text", "text": "q2"}],
        },
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "r1"},
                {"type": "tool_result", "tool_use_id": "t2"},
                {"type": "text", "text": "more"},
            ],
        },
    ]


texts = st.text(min_size=1, max_size=12)
images = st.builds(ImagePart, url=names.map("https://img.test/{}".format)) | st.builds(
    ImagePart,
    data=st.from_regex(r"[A-Za-z0-9+/]{4,16}", fullmatch=True),
    media_type=st.sampled_from(["image/png", "image/jpeg", "image/webp"]),
)
content_parts: st.SearchStrategy[TextPart | ImagePart] = st.builds(TextPart, texts) | images
user_parts: st.SearchStrategy[list[Part]] = st.lists(content_parts, min_size=1, max_size=3)
result_parts = st.lists(content_parts, max_size=2)


@st.composite
def assistant_turns(draw: st.DrawFn, turn: int) -> Message:
    parts: list[Part] = []
    kind = draw(st.sampled_from(["none", "thinking", "redacted"]))
    if kind == "thinking":
        parts.append(ReasoningPart(draw(st.text(max_size=12)), draw(texts)))
    elif kind == "redacted":
        parts.append(ReasoningPart(redacted=draw(texts)))
    if draw(st.booleans()):
        parts.append(TextPart(draw(texts)))
    for k in range(draw(st.integers(0, 2))):
        args = msgspec.json.encode(draw(arguments)).decode()
        parts.append(ToolCallPart(f"toolu_{turn}_{k}", draw(names), args))
    return Message("assistant", parts or [TextPart(draw(texts))])


@st.composite
def requests(draw: st.DrawFn) -> ChatRequest:
    messages: list[Message] = []
    if draw(st.booleans()):
        messages.append(
            Message("system", draw(st.lists(st.builds(TextPart, texts), min_size=1, max_size=2)))
        )
    calls: list[ToolCallPart] = []
    for turn in range(draw(st.integers(1, 4))):
        if calls:
            results: list[Part] = [
                ToolResultPart(c.id, draw(result_parts), draw(st.booleans())) for c in calls
            ]
            messages.append(Message("tool", results))
            if draw(st.booleans()):
                messages.append(Message("user", draw(user_parts)))
        else:
            messages.append(Message("user", draw(user_parts)))
        reply = draw(assistant_turns(turn))
        messages.append(reply)
        calls = [p for p in reply.parts if isinstance(p, ToolCallPart)]
    tools = draw(
        st.none()
        | st.lists(
            st.builds(
                Tool,
                names,
                st.none() | texts,
                st.fixed_dictionaries(
                    {
                        "type": st.just("object"),
                        "properties": st.dictionaries(
                            names, st.just({"type": "string"}), max_size=2
                        ),
                    }
                ),
                st.none() | st.booleans(),
            ),
            min_size=1,
            max_size=3,
        )
    )
    choices = ["auto", "none", "required", *(t.name for t in tools or [])]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    return ChatRequest(
        "m",
        messages,
        max_tokens=draw(st.none() | st.integers(1, 200_000)),
        temperature=draw(st.none() | st.floats(0, 2)),
        top_p=draw(st.none() | st.floats(0, 1)),
        stop=draw(st.none() | st.lists(texts, min_size=1, max_size=3)),
        seed=draw(st.none() | st.integers(0, 100)),
        n=draw(st.none() | st.just(1)),
        tools=tools,
        tool_choice=draw(st.none() | st.sampled_from(choices)),
        parallel_tool_calls=draw(st.none() | st.booleans()),
        response_format=draw(
            st.none()
            | st.just({"type": "json_object"})
            | st.just({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
        ),
        reasoning_budget=draw(st.none() | st.integers(-1, 30_000)),
        reasoning_effort=draw(st.none() | st.sampled_from(["none", "low", "medium", "high"])),
        include_usage=draw(st.booleans()),
        user=draw(st.none() | texts),
    )


def _adjusted(r: ChatRequest) -> ChatRequest:
    """``r`` as it comes back from Anthropic, by the documented ADJUSTMENTS table."""
    budget = r.reasoning_budget
    if budget is None and r.reasoning_effort not in (None, "none"):
        budget = codec.EFFORT_BUDGET[str(r.reasoning_effort)]
    if budget is not None:
        budget = None if budget <= 0 else max(budget, 1024)
    if budget is not None and r.max_tokens is not None:
        budget = min(budget, r.max_tokens - 1)
    if budget is not None and budget < 1024:
        budget = None
    temperature, top_p = r.temperature, r.top_p
    if budget is not None:
        temperature = None
        top_p = top_p if top_p is not None and top_p >= 0.95 else None
    if temperature is not None:
        temperature, top_p = min(temperature, 1.0), None
    choice, parallel = r.tool_choice, r.parallel_tool_calls
    if parallel is False and choice is None:
        choice = "auto"
    if parallel is True or choice == "none":
        parallel = None
    fmt = r.response_format
    if fmt is not None and fmt["type"] == "json_schema":
        fmt = {
            "type": "json_schema",
            "json_schema": {**fmt["json_schema"], "name": "output", "strict": True},
        }
    return msgspec.structs.replace(
        r,
        stream=True,
        max_tokens=r.max_tokens or codec.DEFAULT_MAX_TOKENS + (budget or 0),
        temperature=temperature,
        top_p=top_p,
        seed=None,
        n=None,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        response_format=fmt if fmt is not None and fmt["type"] == "json_schema" else None,
        reasoning_budget=budget,
        reasoning_effort=None,
        include_usage=False,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_request_round_trip(request: ChatRequest) -> None:
    body = codec.encode_request(request, "m")
    decoded = codec.decode_request(json.loads(json.dumps(body)))
    assert msgspec.structs.replace(decoded, source=None) == _adjusted(request)
