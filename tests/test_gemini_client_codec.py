"""The Gemini client-side codecs as pure functions: a request read into the canon and
written back for a Gemini upstream keeps what Gemini needs (thought signatures on the
part they came with, results paired with calls); any canonical stream encoded for a
Gemini client reads back, through the upstream decoder, as the same answer."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenrelay.events import (
    Event,
    Finish,
    ReasoningDelta,
    ReasoningPart,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    Usage,
)
from tokenrelay.fold import Fold, Tally
from tokenrelay.protocols.gemini import codec as gemini
from tokenrelay.server.app import _key_from_query
from tokenrelay.sse import ServerSentEvent, SSEDataDecoder

CONVERSATION: dict[str, Any] = {
    "systemInstruction": {"parts": [{"text": "be brief"}]},
    "contents": [
        {"role": "user", "parts": [{"text": "weather and time?"}]},
        {
            "role": "model",
            "parts": [
                {"text": "thinking it over", "thought": True},
                {"text": "Checking.", "thoughtSignature": "sig-text"},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {"tz": "CET"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_time", "response": {"output": "14:05"}}},
                {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}},
            ],
        },
    ],
    "tools": [
        {
            "functionDeclarations": [
                {"name": "get_weather", "parameters": {"type": "OBJECT", "properties": {}}},
                {"name": "get_time", "parametersJsonSchema": {"type": "object"}},
            ]
        }
    ],
    "generationConfig": {"maxOutputTokens": 64, "thinkingConfig": {"thinkingBudget": 512}},
}
PARAMS = {"model": "models/local/echo", "method": "streamGenerateContent", "alt": "sse"}


def test_a_request_reads_into_the_canon() -> None:
    request = gemini.decode_request(CONVERSATION, PARAMS)
    assert request.model == "local/echo" and request.stream is True
    assert request.source is not None and request.source.array is False
    assert request.source.untranslatable is None
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "tool"]
    model_turn = request.messages[2].parts
    assert isinstance(model_turn[0], ReasoningPart) and model_turn[0].signature is None
    assert model_turn[1] == ReasoningPart(signature="sig-text")
    assert model_turn[2] == TextPart("Checking.")
    calls = [p for p in model_turn if isinstance(p, ToolCallPart)]
    results = [p for p in request.messages[3].parts if isinstance(p, ToolResultPart)]
    by_name = {c.name: c.id for c in calls}
    assert {r.name: r.tool_call_id for r in results} == by_name  # paired by name
    assert request.max_tokens == 64 and request.reasoning_budget == 512
    assert [t.name for t in request.tools or []] == ["get_weather", "get_time"]
    assert request.tools is not None and request.tools[0].parameters["type"] == "object"


def test_written_back_for_gemini_the_signature_stays_on_its_part() -> None:
    request = gemini.decode_request(CONVERSATION, PARAMS)
    request.source = None  # as if for another protocol: the canon is all there is
    body = gemini.encode_request(request, "gemini-2.5-flash")
    parts = body["contents"][1]["parts"]
    assert {"text": "Checking.", "thoughtSignature": "sig-text"} in parts
    results = [p["functionResponse"]["name"] for p in body["contents"][2]["parts"]]
    assert results == ["get_time", "get_weather"]


def test_no_alt_sse_asks_for_the_json_array() -> None:
    request = gemini.decode_request(CONVERSATION, {**PARAMS, "alt": ""})
    assert request.source is not None and request.source.array is True
    request = gemini.decode_request(CONVERSATION, {**PARAMS, "method": "generateContent"})
    assert request.stream is False and request.source is not None and not request.source.array


def test_a_body_the_canon_cannot_read_is_kept_for_a_gemini_upstream() -> None:
    body = {"contents": [{"parts": [{"text": "hi"}]}], "tools": [{"googleSearch": {}}]}
    request = gemini.decode_request(body, PARAMS)
    assert request.source is not None and request.source.untranslatable is not None
    assert request.source.body is body


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8)
PIECES = st.lists(
    st.one_of(
        st.builds(TextDelta, TEXT),
        st.builds(ReasoningDelta, TEXT),
        st.builds(ToolCallDelta, st.integers(0, 2), arguments=st.just("")),
    ),
    max_size=12,
)


def _calls_first_fragment(events: list[Event]) -> list[Event]:
    """Give each call its id, name and whole arguments on its first fragment."""
    seen: set[int] = set()
    out: list[Event] = []
    for e in events:
        if isinstance(e, ToolCallDelta):
            if e.index in seen:
                continue
            seen.add(e.index)
            args = msgspec.json.encode({"n": e.index}).decode()
            e = ToolCallDelta(e.index, f"call_{e.index}", f"tool_{e.index}", args)
        out.append(e)
    return out


@settings(max_examples=60, deadline=None)
@given(PIECES, st.sampled_from(["stop", "length"]), st.integers(0, 9), st.integers(0, 9))
def test_any_stream_reads_back_as_the_same_answer(
    pieces: list[Event], reason: str, n_in: int, n_out: int
) -> None:
    events = [*_calls_first_fragment(pieces)]
    events += [
        Finish("tool_calls" if any(isinstance(e, ToolCallDelta) for e in events) else reason)
    ]
    events += [Usage(n_in, n_out)]
    encoder = gemini.stream_encoder(gemini.decode_request(CONVERSATION, PARAMS), "m", Tally())
    frames = encoder.encode(events[:3]) + encoder.encode(events[3:]) + encoder.close()
    decoder = gemini.stream_decoder()
    back: list[Event] = []
    for data in SSEDataDecoder().feed(b"".join(frames)):
        back += decoder.feed(ServerSentEvent(data.decode()))
    back += decoder.close()
    sent, got = Fold(), Fold()
    sent.extend(events)
    got.extend(back)
    a, b = sent.ordered_choices()[0], got.ordered_choices()[0]
    assert (b.text, b.reasoning, b.finish_reason) == (a.text, a.reasoning, a.finish_reason)
    assert [(c.name, c.arguments) for c in b.ordered_tool_calls()] == [
        (c.name, c.arguments) for c in a.ordered_tool_calls()
    ]
    assert got.usage is not None and (got.usage.input, got.usage.output) == (n_in, n_out)


def test_a_query_key_becomes_the_credential_header() -> None:
    scope: dict[str, Any] = {"query_string": b"alt=sse&key=sk%2Bone", "headers": []}
    _key_from_query(scope, [(b"key=", b"x-goog-api-key")])
    assert scope["headers"] == [(b"x-goog-api-key", b"sk+one")]
    scope = {"query_string": b"key=other", "headers": [(b"x-goog-api-key", b"mine")]}
    _key_from_query(scope, [(b"key=", b"x-goog-api-key")])
    assert scope["headers"] == [(b"x-goog-api-key", b"mine")]  # the header wins
    scope = {"query_string": b"monkey=1", "headers": []}
    _key_from_query(scope, [(b"key=", b"x-goog-api-key")])
    assert scope["headers"] == []
