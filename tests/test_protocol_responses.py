"""The OpenAI Responses codec: recorded streams, the passthrough, the encoder against
our decoder and against the official SDK's accumulator, and the request codec."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import httpx2 as sdk_http
import msgspec
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.paths import fixture_files, fixtures_dir

from tokenrelay.events import (
    ChatRequest,
    Error,
    Event,
    Finish,
    GatewayError,
    ImagePart,
    Message,
    ReasoningDelta,
    ReasoningPart,
    Source,
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
from tokenrelay.protocols.responses import codec
from tokenrelay.protocols.responses import wire as responses_wire
from tokenrelay.sse import ServerSentEvent, SSEDecoder, SSENamedDecoder

FIXTURES = fixture_files("openai/responses_*.sse")
FIXTURE_IDS = [p.name for p in FIXTURES]
INCLUDE = {"include": ["reasoning.encrypted_content"]}


def _read(path: Path) -> bytes:
    fixtures_dir()  # skip (or fail under CI) without ../shared
    return path.read_bytes()


def _frames(raw: bytes, cut: int | None = None) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    if cut is None:
        return decoder.feed(raw) + decoder.flush()
    return decoder.feed(raw[:cut]) + decoder.feed(raw[cut:]) + decoder.flush()


def _named(raw: bytes) -> list[tuple[bytes | None, bytes]]:
    """What the passthrough reads (``Upstream.named()``)."""
    decoder = SSENamedDecoder()
    return decoder.feed(raw) + decoder.flush()


def _decode(frames: list[ServerSentEvent]) -> Fold:
    decoder = codec.stream_decoder()
    fold = Fold()
    for frame in frames:
        fold.extend(decoder.feed(frame))
    return fold.extend(decoder.close())


def _expected(raw: bytes) -> dict[str, Any]:
    """What a recorded stream holds, walked from its raw JSON without the codec."""
    text, signature = "", None
    calls: dict[int, list[Any]] = {}
    usage: dict[str, Any] = {}
    for frame in _frames(raw):
        e = json.loads(frame.data)
        if e["type"] == "response.output_text.delta":
            text += e["delta"]
        elif e["type"] == "response.output_item.added" and e["item"]["type"] == "function_call":
            calls[e["output_index"]] = [e["item"]["call_id"], e["item"]["name"], ""]
        elif e["type"] == "response.function_call_arguments.delta":
            calls[e["output_index"]][2] += e["delta"]
        elif e["type"] == "response.output_item.done" and e["item"]["type"] == "reasoning":
            signature = e["item"].get("encrypted_content")
        elif e["type"] == "response.completed":
            usage = e["response"]["usage"]
    return {
        "text": text,
        "signature": signature,
        "calls": [(i, n, json.loads(a)) for i, n, a in calls.values()],
        "usage": Usage(
            input=usage["input_tokens"],
            output=usage["output_tokens"],
            cached=usage["input_tokens_details"]["cached_tokens"],
            reasoning=usage["output_tokens_details"]["reasoning_tokens"],
            cache_write=usage["input_tokens_details"].get("cache_write_tokens", 0),
        ),
    }


def _check_fold(fold: Fold, exp: dict[str, Any]) -> None:
    choice = fold.ordered_choices()[0]
    assert fold.error is None
    assert choice.text == exp["text"]
    assert choice.reasoning_signature == exp["signature"]
    calls = [(c.id, c.name, json.loads(c.arguments)) for c in choice.ordered_tool_calls()]
    assert calls == exp["calls"]
    assert choice.finish_reason == ("tool_calls" if exp["calls"] else "stop")
    assert fold.usage == exp["usage"]


# --- recordings ---------------------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURES, ids=FIXTURE_IDS)
def test_recorded_stream_decodes_to_what_it_holds(path: Path) -> None:
    raw = _read(path)
    fold = _decode(_frames(raw))
    _check_fold(fold, _expected(raw))
    assert fold.id.startswith("resp_") and fold.model


@pytest.mark.parametrize("path", FIXTURES, ids=FIXTURE_IDS)
def test_recorded_stream_split_at_every_byte(path: Path) -> None:
    raw = _read(path)
    exp = _expected(raw)
    for cut in range(1, len(raw)):
        _check_fold(_decode(_frames(raw, cut)), exp)


@pytest.mark.parametrize("path", FIXTURES, ids=FIXTURE_IDS)
def test_passthrough_is_byte_exact_but_for_the_model(path: Path) -> None:
    raw = _read(path)
    tally = Tally()
    passthrough = codec.passthrough(ChatRequest("client-model", []), "client-model", tally)
    out = b"".join(passthrough.encode(_named(raw))) + b"".join(passthrough.close())
    upstream = json.loads(_frames(raw)[0].data)["response"]["model"]
    expected = raw.replace(f'"model":"{upstream}"'.encode(), b'"model":"client-model"')
    assert out == expected
    exp = _expected(raw)
    assert tally.usage == exp["usage"] and tally.error is None
    assert tally.finish_reason == ("tool_calls" if exp["calls"] else "stop")
    assert passthrough.ended


def test_passthrough_reports_a_malformed_frame_and_a_truncated_stream() -> None:
    created = b'event: response.created\ndata: {"type":"response.created","response":{"id":"resp_1","model":"u"},"sequence_number":0}\n\n'
    p = codec.passthrough(ChatRequest("m", []), "m", Tally())
    out = p.encode(_named(created + b"event: x\ndata: {broken\n\n"))
    error = json.loads(_frames(out[-1])[0].data)
    assert error["type"] == "error" and error["code"] == "upstream_malformed"
    assert error["sequence_number"] == 1 and p.ended
    p = codec.passthrough(ChatRequest("m", []), "m", Tally())
    p.encode(_named(created))
    end = json.loads(_frames(b"".join(p.close()))[0].data)
    assert end["code"] == "upstream_truncated" and end["sequence_number"] == 1


def test_passthrough_forwards_events_as_they_came_with_invalid_utf8_replaced() -> None:
    """Each delta's bytes go out as the upstream wrote them (spacing, field order, escapes
    kept); a frame with invalid UTF-8 gets U+FFFD, so the client's JSON parser does not
    fail; an event without a name stays without one."""
    tally = Tally()
    p = codec.passthrough(ChatRequest("m", []), "m", tally)
    delta = b'{"type":"response.output_text.delta", "delta":"h\\u00e9", "sequence_number":3}'
    bad = b'{"type":"response.output_text.delta","delta":"x\xff","sequence_number":4}'
    plain = b'{"type":"keepalive","sequence_number":5}'
    out = p.encode(
        _named(b"event: response.output_text.delta\ndata: " + delta + b"\n\n")
        + _named(b"event: response.output_text.delta\ndata: " + bad + b"\n\n")
        + _named(b"data: " + plain + b"\n\n")
    )
    assert out[0] == b"event: response.output_text.delta\ndata: " + delta + b"\n\n"
    assert out[1] == (
        b"event: response.output_text.delta\ndata: "
        + bad.replace(b"\xff", "\ufffd".encode())
        + b"\n\n"
    )
    assert out[2] == b"data: " + plain + b"\n\n"
    assert tally.output_chars == 4


def test_decoder_errors_incomplete_and_truncation() -> None:
    def run(*events: dict[str, Any]) -> list[Event]:
        decoder = codec.stream_decoder()
        out: list[Event] = []
        for e in events:
            out += decoder.feed(ServerSentEvent(json.dumps(e), e["type"]))
        return out + decoder.close()

    created = {"type": "response.created", "response": {"id": "resp_1", "model": "u"}}
    assert run(created)[-1] == responses_wire.TRUNCATED
    usage = {
        "input_tokens": 5,
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 2},
    }
    incomplete = {
        "type": "response.incomplete",
        "response": {"incomplete_details": {"reason": "max_output_tokens"}, "usage": usage},
    }
    final = Start("", "", extra={responses_wire.FINAL: incomplete["response"]})
    assert run(created, incomplete)[1:] == [Usage(5, 7, reasoning=2), final, Finish("length")]
    failed = {
        "type": "response.failed",
        "response": {"error": {"code": "server_error", "message": "x"}},
    }
    assert run(created, failed)[1:] == [Error("upstream", "x", 502, "server_error")]
    error = {"type": "error", "code": "rate_limit_exceeded", "message": "slow down", "param": None}
    assert run(created, error)[1:] == [Error("rate_limit", "slow down", 429, "rate_limit_exceeded")]
    summary = [
        {"type": "response.reasoning_summary_part.added", "summary_index": 0},
        {"type": "response.reasoning_summary_text.delta", "delta": "a", "summary_index": 0},
        {"type": "response.reasoning_summary_part.added", "summary_index": 1},
        {"type": "response.reasoning_summary_text.delta", "delta": "b", "summary_index": 1},
    ]
    fold = Fold().extend(run(created, *summary, {"type": "response.completed", "response": {}}))
    assert fold.ordered_choices()[0].reasoning == "a\n\nb"


# --- the encoder ----------------------------------------------------------------------

texts = st.text(min_size=1, max_size=12)


@st.composite
def event_streams(draw: st.DrawFn) -> tuple[list[list[Event]], dict[str, Any]]:
    """Canonical streams of reasoning (with a signature), text and tool calls (maybe
    interleaved), a finish and usage, cut into batches; and what they hold."""
    thinking = draw(st.lists(texts, max_size=4))
    signature = draw(st.none() | st.text("abcXYZ019+/=", min_size=1, max_size=20))
    text = draw(st.lists(texts, max_size=5))
    n_calls = draw(st.integers(0, 3))
    calls = [
        (f"call_{i}", f"tool_{i}", {"k": draw(st.text(max_size=6)), "n": i}) for i in range(n_calls)
    ]
    fragments: list[list[ToolCallDelta]] = []
    for i, (cid, fn, args) in enumerate(calls):
        wire = json.dumps(args)
        cuts = sorted(draw(st.lists(st.integers(1, max(1, len(wire) - 1)), max_size=3)))
        pieces = [wire[a:b] for a, b in itertools.pairwise([0, *cuts, len(wire)])]
        fragments.append(
            [ToolCallDelta(i, cid, fn, pieces[0])]
            + [ToolCallDelta(i, arguments=p) for p in pieces[1:]]
        )
    if draw(st.booleans()):  # interleaved, as the canon allows
        tools = [
            f[k]
            for k in range(max(map(len, fragments), default=0))
            for f in fragments
            if k < len(f)
        ]
    else:
        tools = [d for f in fragments for d in f]
    events: list[Event] = [Start(draw(st.sampled_from(["resp_up", "chatcmpl-1", ""])), "upstream")]
    events += [ReasoningDelta(t) for t in thinking]
    if signature:
        events.append(ReasoningDelta(signature=signature))
    events += [TextDelta(t) for t in text]
    events += tools
    reason = draw(st.sampled_from(["stop", "length", "content_filter", "tool_calls"]))
    cached = draw(st.integers(0, 1000))
    usage = Usage(
        input=cached + draw(st.integers(0, 1000)), output=draw(st.integers(0, 9999)), cached=cached
    )
    events += [Finish(reason), usage]
    cuts = sorted(draw(st.lists(st.integers(0, len(events)), max_size=6)))
    batches = [events[a:b] for a, b in itertools.pairwise([0, *cuts, len(events)])]
    finish = reason
    if reason in ("stop", "tool_calls"):
        finish = "tool_calls" if calls else "stop"
    expected = {
        "text": "".join(text),
        "thinking": "".join(thinking),
        "signature": signature,
        "calls": calls,
        "finish": finish,
        "usage": usage,
    }
    return batches, expected


def _request(**body: Any) -> ChatRequest:
    full = {"model": "client-model", "input": "hi", **body}
    return ChatRequest("client-model", [], source=Source(codec.name, full))


def _encode(batches: list[list[Event]], tally: Tally | None = None, **body: Any) -> bytes:
    encoder = codec.stream_encoder(_request(**body), "client-model", tally or Tally())
    out = b"".join(b"".join(encoder.encode(b)) for b in batches) + b"".join(encoder.close())
    assert encoder.ended and encoder.close() == []
    return out


def _check_wire(frames: list[ServerSentEvent]) -> None:
    """The Responses framing rules the SDK relies on: event names equal to ``type``,
    ``sequence_number`` 0, 1, 2, ...; created and in_progress first, a terminal event
    last; items opened at consecutive ``output_index`` and closed before the next."""
    data = [json.loads(f.data) for f in frames]
    assert all(f.event == d["type"] for f, d in zip(frames, data, strict=True))
    assert [d["sequence_number"] for d in data] == list(range(len(data)))
    assert [d["type"] for d in data[:2]] == ["response.created", "response.in_progress"]
    assert data[-1]["type"] in ("response.completed", "response.incomplete")
    open_index, next_index = None, 0
    for d in data[2:-1]:
        if d["type"] == "response.output_item.added":
            assert open_index is None and d["output_index"] == next_index
            open_index, next_index = next_index, next_index + 1
        else:
            assert d["output_index"] == open_index, d
            if d["type"] == "response.output_item.done":
                open_index = None
    assert open_index is None
    assert len(data[-1]["response"]["output"]) == next_index


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_streams(), st.integers(1, 64))
def test_encoder_round_trips_through_the_decoder(stream: Any, chunk: int) -> None:
    batches, expected = stream
    tally = Tally()
    wire = _encode(batches, tally, **INCLUDE)
    decoder, frames = SSEDecoder(), []
    for i in range(0, len(wire), chunk):
        frames += decoder.feed(wire[i : i + chunk])
    _check_wire(frames)
    fold = _decode(frames)
    choice = fold.ordered_choices()[0]
    assert fold.error is None and fold.model == "client-model" and fold.id.startswith("resp_")
    assert choice.text == expected["text"]
    assert choice.reasoning == expected["thinking"]
    assert choice.reasoning_signature == expected["signature"]
    calls = [(c.id, c.name, json.loads(c.arguments)) for c in choice.ordered_tool_calls()]
    assert calls == expected["calls"]
    assert choice.finish_reason == expected["finish"]
    assert fold.usage == expected["usage"]
    assert tally.usage == expected["usage"] and tally.started


def test_encrypted_content_only_when_include_asks() -> None:
    events: list[Event] = [ReasoningDelta("hm"), ReasoningDelta(signature="sig"), TextDelta("a")]
    assert b'"encrypted_content":"sig"' in _encode([events], **INCLUDE)
    assert b"encrypted_content" not in _encode([events]) and b"sig" not in _encode([events])


def test_encoder_error_mid_stream() -> None:
    tally = Tally()
    encoder = codec.stream_encoder(_request(), "m", tally)
    boom = Error("overloaded", "busy", 529)
    out = b"".join(encoder.encode([Start("x", "u"), TextDelta("hi"), boom, TextDelta("never")]))
    data = [json.loads(f.data) for f in _frames(out)]
    assert [d["type"] for d in data[-2:]] == ["error", "response.failed"]
    assert data[-2]["message"] == "busy"
    assert data[-1]["response"]["error"]["message"] == "busy"
    assert [d["sequence_number"] for d in data] == list(range(len(data)))
    assert b"never" not in out and encoder.ended and tally.error == boom
    assert encoder.close() == [] and encoder.fail(boom) == []


# --- the official SDK's accumulator over our bytes ----------------------------------


def _sdk(wire: bytes) -> openai.OpenAI:
    def serve(request: Any) -> Any:
        return sdk_http.Response(200, headers={"content-type": "text/event-stream"}, content=wire)

    return openai.OpenAI(
        api_key="test",
        base_url="http://gateway.test/v1",
        max_retries=0,
        http_client=sdk_http.Client(transport=sdk_http.MockTransport(serve)),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_streams())
def test_sdk_accumulates_random_streams(stream: Any) -> None:
    batches, expected = stream
    if expected["finish"] in ("length", "content_filter"):
        return  # response.incomplete: get_final_response wants completed (next test)
    client = _sdk(_encode(batches, **INCLUDE))
    with client.responses.stream(model="client-model", input="hi") as s:
        deltas = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        final = s.get_final_response()
    assert final.output_text == deltas == expected["text"]
    assert final.model == "client-model" and final.status == "completed"
    calls = [
        (o.call_id, o.name, json.loads(o.arguments))
        for o in final.output
        if o.type == "function_call"
    ]
    assert calls == expected["calls"]
    reasoning = [o for o in final.output if o.type == "reasoning"]
    assert "".join(s.text for r in reasoning for s in r.summary) == expected["thinking"]
    if expected["signature"]:
        assert [r.encrypted_content for r in reasoning][-1] == expected["signature"]
    u = expected["usage"]
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (u.input, u.output)
    assert final.usage.input_tokens_details.cached_tokens == u.cached


def test_sdk_sees_incomplete_and_error_events() -> None:
    wire = _encode([[TextDelta("cut"), Finish("length"), Usage(1, 1)]])
    events = list(_sdk(wire).responses.create(model="m", input="hi", stream=True))
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    encoder = codec.stream_encoder(_request(), "m", Tally())
    wire = b"".join(encoder.encode([TextDelta("part")])) + b"".join(
        encoder.fail(Error("rate_limit", "slow down", 429, "rate_limit_exceeded"))
    )
    events = list(_sdk(wire).responses.create(model="m", input="hi", stream=True))
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2].message == "slow down" and events[-2].code == "rate_limit_exceeded"


# --- non-streaming body and errors --------------------------------------------------


@pytest.mark.parametrize("path", FIXTURES, ids=FIXTURE_IDS)
def test_non_streaming_same_protocol_body_is_the_upstreams_final_response(path: Path) -> None:
    raw = _read(path)
    body = codec.encode_response(_decode(_frames(raw)), "client-model")
    final = json.loads(_frames(raw)[-1].data)["response"]
    assert body == {**final, "model": "client-model"}


def test_encode_response_is_the_fold_as_a_response() -> None:
    fold = Fold().extend(
        [
            Start("resp_up", "u"),
            ReasoningDelta("think"),
            ReasoningDelta(signature="sig"),
            TextDelta("answer"),
            ToolCallDelta(0, "call_1", "f", '{"a": 1}'),
            Finish("tool_calls"),
            Usage(10, 5, cached=3, reasoning=2),
        ]
    )
    body = codec.encode_response(fold, "client-model")
    assert body["id"] == "resp_up" and body["status"] == "completed"
    assert body["model"] == "client-model" and body["object"] == "response"
    assert [o["type"] for o in body["output"]] == ["reasoning", "message", "function_call"]
    assert body["output"][0]["encrypted_content"] == "sig"
    assert body["output"][2]["call_id"] == "call_1"
    assert body["usage"]["input_tokens_details"]["cached_tokens"] == 3
    assert body["usage"]["output_tokens_details"]["reasoning_tokens"] == 2
    cut = codec.encode_response(Fold().extend([TextDelta("x"), Finish("length")]), "m")
    assert cut["status"] == "incomplete"
    assert cut["incomplete_details"] == {"reason": "max_output_tokens"}


def test_error_body_and_decode_error() -> None:
    body = codec.error_body(GatewayError("invalid_request", "bad", code="x", param="input"))
    assert body == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "input", "code": "x"}
    }
    error = codec.decode_error(
        429, b'{"error":{"message":"slow","type":"requests","code":"rate_limit_exceeded"}}'
    )
    assert (error.status, error.kind, error.message) == (429, "rate_limit", "slow")
    assert (
        codec.url("https://api.openai.com/v1/", "m", True) == "https://api.openai.com/v1/responses"
    )
    assert codec.headers("k") == {"Authorization": "Bearer k"}


# --- the request codec ----------------------------------------------------------------


def test_decode_request_maps_every_item() -> None:
    body = {
        "model": "m",
        "instructions": "be brief",
        "input": [
            {"role": "developer", "content": "dev rules"},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "https://x/cat.png", "detail": "high"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                    {"type": "input_file", "file_id": "file_1"},
                ],
            },
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "hm"}],
                "encrypted_content": "enc",
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "calling"}],
            },
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a":1}'},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "two"}],
            },
        ],
        "tools": [
            {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True},
            {"type": "web_search"},
            {"type": "custom", "name": "apply_patch", "description": "patch"},
        ],
        "tool_choice": {"type": "function", "name": "f"},
        "max_output_tokens": 64,
        "reasoning": {"effort": "high", "summary": "auto"},
        "text": {
            "format": {
                "type": "json_schema",
                "name": "out",
                "schema": {"type": "object"},
                "strict": True,
            }
        },
        "store": False,
        "stream": True,
    }
    r = codec.decode_request(body)
    assert r.messages == [
        Message("system", [TextPart("be brief")]),
        Message("system", [TextPart("dev rules")]),
        Message(
            "user",
            [
                TextPart("look"),
                ImagePart(url="https://x/cat.png", detail="high"),
                ImagePart(data="AAAA", media_type="image/png"),
            ],
        ),
        Message(
            "assistant",
            [
                ReasoningPart("hm", "enc"),
                TextPart("calling"),
                ToolCallPart("c1", "f", '{"a":1}'),
                ToolCallPart("c2", "g", "{}"),
            ],
        ),
        Message(
            "tool",
            [ToolResultPart("c1", [TextPart("one")]), ToolResultPart("c2", [TextPart("two")])],
        ),
    ]
    assert [t.name for t in r.tools or []] == ["f", "apply_patch"]
    assert (r.tools or [])[1].parameters["required"] == ["input"]
    assert r.tool_choice == "f" and r.max_tokens == 64 and r.reasoning_effort == "high"
    assert r.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
    }
    assert r.stream and r.extra == {"store": False}
    assert r.source is not None and r.source.body is body


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"model": 3}, "model"),
        ({"input": 3}, "input"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": [{"type": "function_call", "name": "f"}]}, "input[0]"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"tools": [{"type": "function"}]}, "tools[0].name"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ],
)
def test_decode_request_names_the_bad_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as caught:
        codec.decode_request({"model": "m", "input": "hi", **fields})
    assert caught.value.param == param and caught.value.status == 400


def test_same_protocol_request_is_forwarded_as_written() -> None:
    body = {
        "model": "client",
        "input": [{"type": "web_search_call", "id": "x"}, "?"],
        "tools": [{"type": "web_search"}],
        "store": True,
    }
    request = ChatRequest("client", [], source=Source(codec.name, body))
    assert codec.encode_request(request, "upstream") == {
        **body,
        "model": "upstream",
        "stream": True,
        "store": False,  # the state is the gateway's (state.py): the upstream keeps none
    }
    continued = {**body, "previous_response_id": "resp_1", "background": True}
    request = ChatRequest("client", [], source=Source(codec.name, continued))
    assert codec.encode_request(request, "upstream") == codec.encode_request(
        ChatRequest("client", [], source=Source(codec.name, body)), "upstream"
    )


names = st.text("abcdefgh_", min_size=1, max_size=8)


@st.composite
def requests(draw: st.DrawFn) -> ChatRequest:
    """Canonical requests in the part of the canon the Responses wire carries."""
    messages: list[Message] = []
    if draw(st.booleans()):
        messages.append(Message("system", [TextPart(draw(texts))]))
    for turn in range(draw(st.integers(1, 4))):
        messages.append(Message("user", [TextPart(draw(texts))]))
        if draw(st.booleans()):
            messages[-1].parts.append(ImagePart(url=f"https://x/{turn}.png", detail="low"))
        if turn % 2:
            calls = [
                ToolCallPart(f"c{turn}{i}", draw(names), '{"a": 1}')
                for i in range(draw(st.integers(0, 2)))
            ]
            parts: list[Any] = []
            if draw(st.booleans()):
                parts.append(ReasoningPart(draw(texts), draw(texts)))
            parts += [TextPart(draw(texts)), *calls]
            messages.append(Message("assistant", parts))
            if calls:
                messages.append(
                    Message("tool", [ToolResultPart(c.id, [TextPart(draw(texts))]) for c in calls])
                )
    tools = draw(
        st.none()
        | st.lists(
            st.builds(Tool, names, st.none() | texts, st.just({"type": "object"}), st.booleans()),
            min_size=1,
            max_size=3,
        )
    )
    schema = {"name": "x", "schema": {"type": "object"}, "strict": True}
    return ChatRequest(
        "m",
        messages,
        stream=True,
        max_tokens=draw(st.none() | st.integers(1, 10**5)),
        temperature=draw(st.none() | st.floats(0, 2)),
        top_p=draw(st.none() | st.floats(0, 1)),
        tools=tools,
        tool_choice=draw(
            st.none()
            | st.sampled_from(["auto", "none", "required", *(t.name for t in tools or [])])
        ),
        parallel_tool_calls=draw(st.none() | st.booleans()),
        response_format=draw(
            st.none()
            | st.just({"type": "json_object"})
            | st.just({"type": "json_schema", "json_schema": schema})
        ),
        reasoning_effort=draw(st.none() | st.sampled_from(["low", "medium", "high"])),
        include_usage=True,
        user=draw(st.none() | texts),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_request_round_trip(request: ChatRequest) -> None:
    """Canon -> Responses body -> canon gives the request back, but for what DROPPED
    says: ``store`` and, for reasoning, ``include`` (the gateway's own) come back in
    ``extra``."""
    body = codec.encode_request(request, "m")
    signed = any(isinstance(p, ReasoningPart) for m in request.messages for p in m.parts)
    gateway: dict[str, Any] = {"store": False}
    if request.reasoning_effort is not None or signed:
        gateway["include"] = ["reasoning.encrypted_content"]
    decoded = codec.decode_request(json.loads(json.dumps(body)))
    assert decoded.extra == gateway
    expected = msgspec.structs.replace(request, extra=decoded.extra)
    assert msgspec.structs.replace(decoded, source=None) == expected


def test_custom_tool_calls_are_custom_tool_call_items() -> None:
    tools = [{"type": "custom", "name": "apply_patch"}, {"type": "function", "name": "f"}]
    events: list[Event] = [
        ToolCallDelta(0, "c1", "apply_patch", '{"input": "*** Begin'),
        ToolCallDelta(0, arguments=' Patch"}'),
        ToolCallDelta(1, "c2", "f", "{}"),
        Finish("tool_calls"),
    ]
    frames = _frames(_encode([events], tools=tools))
    _check_wire(frames)
    data = [json.loads(f.data) for f in frames]
    kinds = [d["type"] for d in data]
    assert "response.custom_tool_call_input.done" in kinds
    assert kinds.count("response.function_call_arguments.delta") == 1  # only f's
    output = data[-1]["response"]["output"]
    assert [(o["type"], o["call_id"]) for o in output] == [
        ("custom_tool_call", "c1"),
        ("function_call", "c2"),
    ]
    assert output[0]["input"] == "*** Begin Patch"


def test_a_stop_by_the_user_ends_the_stream_properly() -> None:
    tally = Tally()
    encoder = codec.stream_encoder(_request(), "m", tally)
    out = b"".join(encoder.encode([TextDelta("half")])) + b"".join(encoder.close(cancelled=True))
    frames = _frames(out)
    _check_wire(frames)
    last = json.loads(frames[-1].data)
    assert last["type"] == "response.completed"
    assert last["response"]["output"][0]["content"][0]["text"] == "half"
    assert last["response"]["usage"]["estimated"] is True and tally.finish_reason == "stop"
    created = b'event: response.created\ndata: {"type":"response.created","response":{"id":"resp_1","model":"u"},"sequence_number":0}\n\n'
    p = codec.passthrough(ChatRequest("m", []), "m", Tally())
    p.encode(_named(created))
    end = json.loads(_frames(b"".join(p.close(cancelled=True)))[0].data)
    assert end["type"] == "response.incomplete" and end["response"]["id"] == "resp_1"
    assert end["sequence_number"] == 1
