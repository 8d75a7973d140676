"""The Gemini upstream codec: recorded streams, synthetic streams, request encoding.

The recorded streams are checked against expectations computed here by walking the raw
JSON chunks with the standard library, sharing no code with the decoder. The request
encoder is checked by a hypothesis round trip: canonical request -> Gemini body -> a
small decoder written here -> the canonical fields Gemini keeps (``gemini.DROPPED``
names the rest).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import msgspec
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
    Part,
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
from tokenrelay.fold import Fold
from tokenrelay.protocols.base import UpstreamProtocol
from tokenrelay.protocols.gemini import codec as gemini
from tokenrelay.sse import ServerSentEvent, SSEDecoder

FIXTURES = fixture_files("gemini/*.sse")


def _run(chunks: list[bytes]) -> list[Event]:
    """Bytes, cut into reads as given, through the SSE decoder and the Gemini decoder."""
    sse = SSEDecoder()
    decoder = gemini.stream_decoder()
    events: list[Event] = []
    for chunk in chunks:
        for frame in sse.feed(chunk):
            events.extend(decoder.feed(frame))
    for frame in sse.flush():
        events.extend(decoder.feed(frame))
    return events + decoder.close()


def _frames(*chunks: dict[str, Any]) -> bytes:
    """A Gemini body as the API writes it: ``data: {json}`` + CRLF CRLF per chunk."""
    return b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)


def test_module_is_an_upstream_protocol() -> None:
    codec: UpstreamProtocol = gemini
    assert codec.name == "gemini"


# --- recorded streams -----------------------------------------------------------------


def _expected(raw: bytes) -> dict[str, Any]:
    """What a recorded body holds, read straight from its JSON chunks."""
    chunks = [
        json.loads(block.removeprefix("data: "))
        for block in raw.decode().split("\r\n\r\n")
        if block.strip()
    ]
    text = thoughts = ""
    signature = None
    calls: list[tuple[str, Any, str | None]] = []
    finish = None
    for chunk in chunks:
        for candidate in chunk.get("candidates", []):
            for part in candidate["content"]["parts"]:
                if "functionCall" in part:
                    call = part["functionCall"]
                    calls.append((call["name"], call.get("args", {}), part.get("thoughtSignature")))
                    continue
                if signature is None:
                    signature = part.get("thoughtSignature")
                if part.get("thought"):
                    thoughts += part["text"]
                else:
                    text += part["text"]
            finish = candidate.get("finishReason", finish)
    usage = chunks[-1]["usageMetadata"]
    thought_tokens = usage.get("thoughtsTokenCount", 0)
    return {
        "id": chunks[0]["responseId"],
        "model": chunks[0]["modelVersion"],
        "text": text,
        "reasoning": thoughts,
        "signature": signature,
        "calls": calls,
        "finish": {"STOP": "tool_calls" if calls else "stop"}[str(finish)],
        "usage": Usage(
            input=usage["promptTokenCount"],
            output=usage.get("candidatesTokenCount", 0) + thought_tokens,
            cached=usage.get("cachedContentTokenCount", 0),
            reasoning=thought_tokens,
        ),
    }


@pytest.mark.parametrize("read_size", [0, 1, 3, 64])
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_recorded_stream(path: Path, read_size: int) -> None:
    fixtures_dir()
    raw = path.read_bytes()
    size = read_size or len(raw)
    events = _run([raw[i : i + size] for i in range(0, len(raw), size)])
    want = _expected(raw)
    fold = Fold().extend(events)
    (choice,) = fold.ordered_choices()
    assert isinstance(events[0], Start)
    assert (fold.id, fold.model) == (want["id"], want["model"])
    assert choice.text == want["text"]
    assert choice.reasoning == want["reasoning"]
    assert choice.reasoning_signature == want["signature"]
    calls = choice.ordered_tool_calls()
    assert [(c.name, json.loads(c.arguments), c.signature) for c in calls] == want["calls"]
    assert all(c.id for c in calls) and len({c.id for c in calls}) == len(calls)
    assert choice.finish_reason == want["finish"]
    usages = [e for e in events if isinstance(e, Usage)]
    assert [u for u in usages if not u.partial] == [want["usage"]]  # final counts once
    # the input count at once (partial) unless the first frame already ends the answer
    assert [u.partial for u in usages] in ([True, False], [False])
    assert usages[0].input > 0  # (stream_text: 15 first, 13 at the end; Gemini revises it)
    assert fold.error is None
    assert [e for e in events if isinstance(e, Finish)] == [Finish(want["finish"])]


def test_recorded_streams_present() -> None:
    """The parametrised test above is empty without ../shared: say so."""
    fixtures_dir()
    assert len(FIXTURES) >= 4


# --- synthetic streams ----------------------------------------------------------------


def _call(name: str, args: dict[str, Any], signature: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
    if signature:
        part["thoughtSignature"] = signature
    return part


def _chunk(parts: list[dict[str, Any]], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "responseId": "r1", "modelVersion": "gemini-x", **extra}


def test_parallel_function_calls_get_indices_0_and_1() -> None:
    body = _frames(
        _chunk(
            [_call("get_weather", {"city": "Paris"}, "c2ln"), _call("get_time", {"tz": "CET"})],
            "STOP",
            usageMetadata={"promptTokenCount": 9, "candidatesTokenCount": 4},
        )
    )
    events = _run([body])
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [c.index for c in calls] == [0, 1]
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert [c.arguments for c in calls] == ['{"city":"Paris"}', '{"tz":"CET"}']
    assert [c.signature for c in calls] == ["c2ln", None]
    assert calls[0].id != calls[1].id and all(c.id and c.id.startswith("call_") for c in calls)
    assert [e for e in events if isinstance(e, Finish)] == [Finish("tool_calls")]
    assert events[-1] == Usage(input=9, output=4)


def test_calls_across_frames_keep_counting_and_upstream_ids_are_kept() -> None:
    first = _chunk([{"functionCall": {"name": "a", "args": {}, "id": "g1"}}])
    second = _chunk([_call("b", {"x": [1, 2]})], "STOP")
    calls = [e for e in _run([_frames(first, second)]) if isinstance(e, ToolCallDelta)]
    assert [(c.index, c.name) for c in calls] == [(0, "a"), (1, "b")]
    assert calls[0].id == "g1"


@pytest.mark.parametrize(
    ("reason", "canonical"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "error"),
        ("OTHER", "error"),
        ("LANGUAGE", "error"),
        ("SOMETHING_NEW", "error"),
    ],
)
def test_finish_reasons(reason: str, canonical: str) -> None:
    events = _run([_frames(_chunk([{"text": "hi"}], reason))])
    assert [e for e in events if isinstance(e, Finish)] == [Finish(canonical)]
    assert not any(isinstance(e, Error) for e in events)


def test_usage_the_input_first_then_the_last_values_at_the_end() -> None:
    body = _frames(
        _chunk([{"text": "a"}], usageMetadata={"promptTokenCount": 15, "totalTokenCount": 15}),
        _chunk(
            [{"text": "b"}],
            "STOP",
            usageMetadata={
                "promptTokenCount": 13,
                "candidatesTokenCount": 8,
                "cachedContentTokenCount": 4,
                "thoughtsTokenCount": 20,
            },
        ),
    )
    events = _run([body])
    assert [e for e in events if isinstance(e, Usage)] == [
        Usage(input=15, partial=True),  # at once: the input count, before the answer
        Usage(input=13, output=28, cached=4, reasoning=20),  # final
    ]
    assert isinstance(events[-1], Usage)


def test_signatures_on_text_and_thought_parts() -> None:
    body = _frames(
        _chunk([{"text": "thinking", "thought": True}]),
        _chunk([{"text": "", "thoughtSignature": "U0lH"}, {"text": "answer"}]),
        _chunk([{"text": "!", "thoughtSignature": "b3RoZXI="}], "STOP"),
    )
    events = _run([body])
    reasoning = [e for e in events if isinstance(e, ReasoningDelta)]
    assert reasoning == [ReasoningDelta("thinking"), ReasoningDelta(signature="U0lH")]
    fold = Fold().extend(events)
    choice = fold.ordered_choices()[0]
    assert (choice.text, choice.reasoning_signature) == ("answer!", "U0lH")


def test_signature_only_thought_part() -> None:
    events = _run([_frames(_chunk([{"thought": True, "thoughtSignature": "c2ln"}], "STOP"))])
    assert ReasoningDelta(signature="c2ln") in events


def test_truncated_stream_reports_usage_then_error() -> None:
    body = _frames(_chunk([{"text": "par"}], usageMetadata={"promptTokenCount": 3}))
    events = _run([body])
    assert events[-2] == Usage(input=3, partial=True)  # not a whole answer's counts
    assert isinstance(events[-1], Error) and events[-1].code == "upstream_truncated"
    empty = _run([b""])
    assert len(empty) == 1 and isinstance(empty[0], Error)


def test_in_stream_error_ends_the_stream() -> None:
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    body = _frames(_chunk([{"text": "a"}], usageMetadata={"promptTokenCount": 2}), error)
    body += _frames(_chunk([{"text": "late"}], "STOP"))
    events = _run([body])
    assert isinstance(events[-1], Error)
    assert (events[-1].message, events[-1].status, events[-1].code) == (
        "The model is overloaded.",
        503,
        "UNAVAILABLE",
    )
    assert isinstance(events[-2], Usage)
    assert not any(isinstance(e, TextDelta) and e.text == "late" for e in events)


def test_blocked_prompt() -> None:
    blocked = {
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7},
        "modelVersion": "gemini-x",
        "responseId": "r9",
    }
    events = _run([_frames(blocked)])
    assert isinstance(events[0], Start)
    assert events[1] == Usage(input=7, partial=True)
    error = events[2]
    assert isinstance(error, Error)
    assert (error.kind, error.code, error.status) == ("invalid_request", "content_filter", 400)
    assert "PROHIBITED_CONTENT" in error.message
    assert len(events) == 3


def test_malformed_frame() -> None:
    decoder = gemini.stream_decoder()
    events = decoder.feed(ServerSentEvent("{not json"))
    assert isinstance(events[-1], Error) and events[-1].code == "upstream_malformed"
    assert decoder.feed(ServerSentEvent(json.dumps(_chunk([{"text": "x"}])))) == []
    assert decoder.close() == []


def test_several_candidates_are_several_choices() -> None:
    chunk = {
        "candidates": [
            {"content": {"parts": [{"text": "A"}]}, "index": 0, "finishReason": "STOP"},
            {"content": {"parts": [_call("f", {})]}, "index": 1, "finishReason": "STOP"},
        ]
    }
    fold = Fold().extend(_run([_frames(chunk)]))
    first, second = fold.ordered_choices()
    assert (first.text, first.finish_reason) == ("A", "stop")
    assert (second.ordered_tool_calls()[0].name, second.finish_reason) == ("f", "tool_calls")
    assert fold.id.startswith("gemini-")


def test_decode_response_non_streaming_body() -> None:
    body = json.dumps(
        _chunk([{"text": "hi"}], "STOP", usageMetadata={"promptTokenCount": 1})
    ).encode()
    fold = Fold().extend(gemini.decode_response(body))
    assert (fold.ordered_choices()[0].text, fold.usage, fold.error) == ("hi", Usage(input=1), None)


# --- url, headers, errors ---------------------------------------------------------------


def test_url_and_headers() -> None:
    base = "https://generativelanguage.googleapis.com/v1beta/"
    assert gemini.url(base, "gemini-2.5-pro", True) == (
        "https://generativelanguage.googleapis.com/v1beta/models/"
        "gemini-2.5-pro:streamGenerateContent?alt=sse"
    )
    assert gemini.url(base, "models/gemini-2.5-pro", False).endswith(
        "/v1beta/models/gemini-2.5-pro:generateContent"
    )
    assert gemini.headers("k-123") == {"x-goog-api-key": "k-123"}
    assert gemini.headers(None) == {}


def test_decode_error() -> None:
    body = {
        "error": {
            "code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36.5s"}
            ],
        }
    }
    error = gemini.decode_error(429, json.dumps(body).encode())
    assert isinstance(error, GatewayError)
    assert (error.kind, error.status, error.code) == ("rate_limit", 429, "RESOURCE_EXHAUSTED")
    assert error.message == "Resource has been exhausted (e.g. check quota)."
    assert error.headers == {"Retry-After": "37"}
    listed = gemini.decode_error(400, json.dumps([{"error": {"message": "bad"}}]).encode())
    assert (listed.kind, listed.message, listed.status) == ("invalid_request", "bad", 400)
    plain = gemini.decode_error(502, b"<html>Bad Gateway</html>")
    assert (plain.kind, plain.message) == ("upstream", "<html>Bad Gateway</html>")
    assert gemini.decode_error(500, b"").message == "upstream returned HTTP 500"


# --- request encoding: unit cases -------------------------------------------------------


def _request(messages: list[Message], **fields: Any) -> ChatRequest:
    return ChatRequest(model="m", messages=messages, **fields)


def _user(text: str) -> Message:
    return Message("user", [TextPart(text)])


def test_request_basics() -> None:
    request = _request(
        [Message("system", [TextPart("be brief")]), _user("hi"), _user("again")],
        max_tokens=100,
        temperature=0.5,
        top_p=0.9,
        stop=["a", "b", "c", "d", "e", "f"],
        seed=7,
        n=2,
        user="u-1",
        parallel_tool_calls=False,
        extra={"top_k": 40, "presence_penalty": 0.5, "logit_bias": {"1": 2}},
    )
    body = gemini.encode_request(request, "gemini-2.5-flash")
    assert body == {
        "contents": [{"role": "user", "parts": [{"text": "hi"}, {"text": "again"}]}],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "generationConfig": {
            "maxOutputTokens": 100,
            "temperature": 0.5,
            "topP": 0.9,
            "stopSequences": ["a", "b", "c", "d", "e"],
            "seed": 7,
            "candidateCount": 2,
            "topK": 40,
            "presencePenalty": 0.5,
        },
    }


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ("lookup", {"mode": "ANY", "allowedFunctionNames": ["lookup"]}),
    ],
)
def test_tool_choice(choice: str, config: dict[str, Any]) -> None:
    tools = [Tool("lookup", "find", {"type": "object", "properties": {"q": {"type": "string"}}})]
    body = gemini.encode_request(_request([_user("x")], tools=tools, tool_choice=choice), "m")
    assert body["toolConfig"] == {"functionCallingConfig": config}
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "lookup",
                    "description": "find",
                    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
                }
            ]
        }
    ]
    assert "toolConfig" not in gemini.encode_request(
        _request([_user("x")], tool_choice=choice), "m"
    )


@pytest.mark.parametrize(
    ("fields", "thinking"),
    [
        ({"reasoning_budget": 2048}, {"thinkingBudget": 2048, "includeThoughts": True}),
        ({"reasoning_effort": "low"}, {"thinkingBudget": 1024, "includeThoughts": True}),
        ({"reasoning_effort": "medium"}, {"thinkingBudget": 8192, "includeThoughts": True}),
        ({"reasoning_effort": "high"}, {"thinkingBudget": 24576, "includeThoughts": True}),
        ({"reasoning_effort": "none"}, {"thinkingBudget": 0}),
        (
            {"reasoning_effort": "high", "reasoning_budget": 99},
            {"thinkingBudget": 99, "includeThoughts": True},
        ),
        ({"reasoning_effort": "extreme"}, None),
    ],
)
def test_reasoning_options(fields: dict[str, Any], thinking: dict[str, Any] | None) -> None:
    config = gemini.encode_request(_request([_user("x")], **fields), "m").get(
        "generationConfig", {}
    )
    assert config.get("thinkingConfig") == thinking


def test_response_format() -> None:
    json_object = _request([_user("x")], response_format={"type": "json_object"})
    assert gemini.encode_request(json_object, "m")["generationConfig"] == {
        "responseMimeType": "application/json"
    }
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": schema}}
    config = gemini.encode_request(_request([_user("x")], response_format=fmt), "m")
    assert config["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "object",
            "properties": {"a": {"type": "integer"}},
            "required": ["a"],
        },
    }


def test_tool_history_names_signatures_and_placeholder() -> None:
    messages = [
        _user("weather?"),
        Message(
            "assistant",
            [
                ToolCallPart("c1", "weather", '{"city":"Paris"}', signature="U0lH"),
                ToolCallPart("c2", "weather", '{"city":"Rome"}'),
            ],
        ),
        Message("tool", [ToolResultPart("c1", [TextPart("sunny")])]),
        Message("tool", [ToolResultPart("c2", [TextPart("boom")], is_error=True)]),
        Message("assistant", [ToolCallPart("c3", "clock", "")]),  # history from elsewhere
        Message("tool", [ToolResultPart("c3", [TextPart("noon")], name="clock")]),
    ]
    contents = gemini.encode_request(_request(messages), "m")["contents"]
    assert contents == [
        {"role": "user", "parts": [{"text": "weather?"}]},
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "weather", "args": {"city": "Paris"}},
                    "thoughtSignature": "U0lH",
                },
                {"functionCall": {"name": "weather", "args": {"city": "Rome"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "weather", "response": {"output": "sunny"}}},
                {"functionResponse": {"name": "weather", "response": {"error": "boom"}}},
            ],
        },
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "clock", "args": {}},
                    "thoughtSignature": gemini.SKIP_SIGNATURE,
                }
            ],
        },
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "clock", "response": {"output": "noon"}}}],
        },
    ]


def test_orphan_tool_result_is_an_invalid_request() -> None:
    messages = [_user("x"), Message("tool", [ToolResultPart("nope", [TextPart("r")])])]
    with pytest.raises(GatewayError) as caught:
        gemini.encode_request(_request(messages), "m")
    assert (caught.value.kind, caught.value.param) == ("invalid_request", "messages[1]")


def test_reasoning_signature_goes_back_on_text_or_as_thought_part() -> None:
    with_text = Message(
        "assistant", [ReasoningPart("summary", signature="U0lH"), TextPart("answer")]
    )
    without_text = Message(
        "assistant",
        [ReasoningPart("summary", signature="U0lH"), ToolCallPart("c", "f", "{}", "Rk4=")],
    )
    unsigned = Message("assistant", [ReasoningPart("raw thoughts"), TextPart("ok")])
    encoded = [
        gemini.encode_request(_request([_user("q"), m]), "m")["contents"][1]["parts"]
        for m in (with_text, without_text, unsigned)
    ]
    assert encoded == [
        [{"text": "answer", "thoughtSignature": "U0lH"}],
        [
            {"text": "summary", "thought": True, "thoughtSignature": "U0lH"},
            {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "Rk4="},
        ],
        [{"text": "ok"}],
    ]


def test_images() -> None:
    parts: list[Part] = [
        ImagePart(data="aGk=", media_type="image/webp"),
        ImagePart(data="aGk="),
        ImagePart(url="data:image/gif;base64,R0lG"),
        ImagePart(url="https://example.com/a/cat.png?x=1", detail="high"),
        ImagePart(url="gs://bucket/blob"),
    ]
    encoded = gemini.encode_request(_request([Message("user", parts)]), "m")["contents"][0]
    assert encoded["parts"] == [
        {"inlineData": {"mimeType": "image/webp", "data": "aGk="}},
        {"inlineData": {"mimeType": "image/png", "data": "aGk="}},
        {"inlineData": {"mimeType": "image/gif", "data": "R0lG"}},
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/a/cat.png?x=1"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://bucket/blob"}},
    ]


def test_same_protocol_body_is_forwarded() -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "raw"}]}], "cachedContent": "c/1"}
    request = _request([_user("x")], source=Source("gemini", body))
    assert gemini.encode_request(request, "m") == body


def test_drop_table_shape() -> None:
    assert all(
        len(row) == 3 and all(isinstance(x, str) and x for x in row) for row in gemini.DROPPED
    )
    assert {"user", "parallel_tool_calls", "Tool.strict", "ReasoningPart.redacted"} <= {
        row[0] for row in gemini.DROPPED
    }


# --- schema rewrite ---------------------------------------------------------------------


def test_schema_strips_unsupported_keys_recursively() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "strict": True,
        "additionalProperties": False,
        "properties": {
            "tags": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"k": {"type": "string", "format": "uri"}},
                },
                "uniqueItems": True,
            },
            "when": {"type": "string", "format": "date-time"},
            "n": {"type": "integer", "format": "int64", "exclusiveMinimum": 0, "minimum": 1},
        },
        "required": ["tags", "ghost"],
    }
    assert gemini.gemini_schema(schema) == {
        "type": "object",
        "properties": {
            "tags": {
                "type": "array",
                "items": {"type": "object", "properties": {"k": {"type": "string"}}},
            },
            "when": {"type": "string", "format": "date-time"},
            "n": {"type": "integer", "format": "int64", "minimum": 1},
        },
        "required": ["tags"],
    }


def test_schema_refs_nullables_unions_and_enums() -> None:
    schema = {
        "type": "object",
        "$defs": {
            "Pet": {"type": "object", "properties": {"name": {"type": "string"}}},
            "Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}},
        },
        "properties": {
            "pet": {"$ref": "#/$defs/Pet", "description": "the pet"},
            "maybe": {"type": ["string", "null"]},
            "either": {"type": ["string", "integer"]},
            "opt": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
            "one": {"oneOf": [{"type": "string"}, {"type": "number"}]},
            "both": {"allOf": [{"properties": {"a": {"type": "string"}}}, {"required": ["a"]}]},
            "fixed": {"const": "yes"},
            "ints": {"type": "integer", "enum": [1, 2]},
            "node": {"$ref": "#/$defs/Node"},
            "dangling": {"$ref": "https://example.com/schema"},
        },
    }
    out = gemini.gemini_schema(schema)["properties"]
    assert out["pet"] == {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "description": "the pet",
    }
    assert out["maybe"] == {"type": "string", "nullable": True}
    assert out["either"] == {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    assert out["opt"] == {"type": "integer", "nullable": True, "default": None}
    assert out["one"] == {"anyOf": [{"type": "string"}, {"type": "number"}]}
    assert out["both"] == {"properties": {"a": {"type": "string"}}, "required": ["a"]}
    assert out["fixed"] == {"type": "string", "enum": ["yes"]}
    assert out["ints"] == {"type": "integer"}
    assert out["dangling"] == {"type": "object"}
    depth, node = 0, out["node"]
    while "properties" in node:
        node, depth = node["properties"]["next"], depth + 1
    assert node == {"type": "object"} and 5 <= depth <= 10
    assert "$defs" not in gemini.gemini_schema(schema)


def test_tool_without_properties_has_no_parameters() -> None:
    tools = [
        Tool("ping", None, {"type": "object", "properties": {}, "additionalProperties": False})
    ]
    body = gemini.encode_request(_request([_user("x")], tools=tools), "m")
    assert body["tools"] == [{"functionDeclarations": [{"name": "ping"}]}]


# --- request encoding: round trip ---------------------------------------------------------

_EXT = {"png": "image/png", "jpg": "image/jpeg", "gif": "image/gif"}
_NOISE = {"additionalProperties": False, "$schema": "http://json-schema.org/draft-07/schema#"}

words = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
idents = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)
signatures = st.binary(min_size=1, max_size=24).map(lambda b: base64.b64encode(b).decode())
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | words,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(idents, inner, max_size=3),
    max_leaves=6,
)
images = st.one_of(
    st.builds(
        lambda data, mime: ImagePart(data=base64.b64encode(data).decode(), media_type=mime),
        st.binary(min_size=1, max_size=12),
        st.sampled_from(sorted(_EXT.values())),
    ),
    st.builds(
        lambda stem, ext: ImagePart(url=f"https://img.example/{stem}.{ext}"),
        idents,
        st.sampled_from(sorted(_EXT)),
    ),
)


@st.composite
def schemas(draw: st.DrawFn) -> dict[str, Any]:
    props = draw(
        st.dictionaries(
            idents,
            st.builds(
                lambda kind, desc: {"type": kind, **({"description": desc} if desc else {})},
                st.sampled_from(["string", "integer", "number", "boolean"]),
                st.none() | words,
            ),
            max_size=3,
        )
    )
    schema: dict[str, Any] = {"type": "object", "properties": props}
    with_required = draw(st.booleans())
    if props and with_required:
        schema["required"] = sorted(props)[:1]
    if draw(st.booleans()):
        schema.update(_NOISE)
    return schema


@st.composite
def requests(draw: st.DrawFn) -> ChatRequest:
    messages: list[Message] = []
    if draw(st.booleans()):
        messages.append(Message("system", [TextPart(draw(words))]))
    call_ids = iter(range(10_000))
    for _ in range(draw(st.integers(1, 3))):
        user: list[Part] = [TextPart(draw(words))]
        user += draw(st.lists(images, max_size=2))
        messages.append(Message("user", user))
        if not draw(st.booleans()):
            continue
        assistant: list[Part] = []
        reasoning = draw(st.none() | st.tuples(words, st.none() | signatures))
        if reasoning is not None:
            assistant.append(ReasoningPart(reasoning[0], reasoning[1]))
        text = draw(st.none() | words)
        if text is not None:
            assistant.append(TextPart(text))
        calls = [
            ToolCallPart(
                f"call_{next(call_ids)}",
                draw(idents),
                json.dumps(draw(st.dictionaries(idents, json_values, max_size=3))),
                draw(st.none() | signatures),
            )
            for _ in range(draw(st.integers(0, 3)))
        ]
        assistant += calls
        if not assistant:
            continue
        messages.append(Message("assistant", assistant))
        for call in calls:
            content: list[TextPart | ImagePart] = [TextPart(draw(words))]
            content += draw(st.lists(images, max_size=1))
            result = ToolResultPart(
                call.id, content, draw(st.booleans()), draw(st.sampled_from([None, call.name]))
            )
            messages.append(Message("tool", [result]))
    tools = draw(
        st.none()
        | st.lists(
            st.builds(Tool, idents, st.none() | words, schemas(), st.none() | st.booleans()),
            min_size=1,
            max_size=3,
        )
    )
    fmt = draw(
        st.none()
        | st.just({"type": "json_object"})
        | schemas().map(
            lambda s: {"type": "json_schema", "json_schema": {"name": "o", "schema": s}}
        )
    )
    return ChatRequest(
        model="m",
        messages=messages,
        max_tokens=draw(st.none() | st.integers(1, 10_000)),
        temperature=draw(st.none() | st.floats(0, 2)),
        top_p=draw(st.none() | st.floats(0, 1)),
        stop=draw(st.none() | st.lists(words, min_size=1, max_size=7)),
        seed=draw(st.none() | st.integers(0, 2**31)),
        n=draw(st.none() | st.integers(1, 4)),
        tools=tools,
        tool_choice=draw(st.none() | st.sampled_from(["auto", "none", "required", "pick"])),
        response_format=fmt,
        reasoning_effort=draw(st.none() | st.sampled_from(sorted(gemini.REASONING_BUDGETS))),
        reasoning_budget=draw(st.none() | st.integers(0, 32_768)),
        user=draw(st.none() | words),
        parallel_tool_calls=draw(st.none() | st.booleans()),
    )


Item = tuple[Any, ...]


def _image_item(part: ImagePart) -> Item:
    if part.data is not None:
        return ("image", part.media_type, part.data, None)
    return ("image", _EXT[(part.url or "").rsplit(".", 1)[-1]], None, part.url)


def _merge(turns: list[tuple[str, list[Item]]]) -> list[tuple[str, list[Item]]]:
    merged: list[tuple[str, list[Item]]] = []
    for role, items in turns:
        if not items:
            continue
        if merged and merged[-1][0] == role:
            merged[-1][1].extend(items)
        else:
            merged.append((role, list(items)))
    return merged


def _without_noise(schema: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in schema.items() if k not in _NOISE}
    if not kept.get("properties"):
        kept.pop("properties", None)
    return kept


def _kept(request: ChatRequest) -> dict[str, Any]:
    """The canonical fields Gemini keeps, after the adjustments in ``gemini.DROPPED``."""
    system: list[str] = []
    turns: list[tuple[str, list[Item]]] = []
    names: dict[str, str] = {}
    for m in request.messages:
        items: list[Item] = []
        if m.role == "system":
            system += [p.text for p in m.parts if isinstance(p, TextPart)]
        elif m.role == "user":
            items = [
                ("text", p.text, None) if isinstance(p, TextPart) else _image_item(p)
                for p in m.parts
                if isinstance(p, TextPart | ImagePart)
            ]
        elif m.role == "assistant":
            signature = next(
                (p.signature for p in m.parts if isinstance(p, ReasoningPart) and p.signature), None
            )
            has_text = any(isinstance(p, TextPart) for p in m.parts)
            for p in m.parts:
                if isinstance(p, ReasoningPart) and p.signature and not has_text:
                    items.append(("thought", p.text, p.signature))
                elif isinstance(p, TextPart):
                    items.append(("text", p.text, signature))
                    signature = None
                elif isinstance(p, ToolCallPart):
                    names[p.id] = p.name
                    items.append(("call", p.name, json.loads(p.arguments), p.signature))
        else:
            for p in m.parts:
                assert isinstance(p, ToolResultPart)
                text = "".join(c.text for c in p.content if isinstance(c, TextPart))
                items.append(("result", p.name or names[p.tool_call_id], p.is_error, text))
                items += [_image_item(c) for c in p.content if isinstance(c, ImagePart)]
        turns.append(("model" if m.role == "assistant" else "user", items))
    budget = request.reasoning_budget
    if budget is None and request.reasoning_effort is not None:
        budget = gemini.REASONING_BUDGETS[request.reasoning_effort]
    fmt = request.response_format
    schema = fmt["json_schema"]["schema"] if fmt and fmt["type"] == "json_schema" else None
    return {
        "system": system,
        "turns": _merge(turns),
        "tools": [
            (
                t.name,
                t.description,
                _without_noise(t.parameters) if t.parameters["properties"] else None,
            )
            for t in request.tools or ()
        ],
        "tool_choice": request.tool_choice if request.tools else None,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stop": request.stop[:5] if request.stop else None,
        "seed": request.seed,
        "n": request.n if request.n and request.n > 1 else None,
        "json": fmt is not None,
        "schema": _without_noise(schema) if schema else None,
        "budget": budget,
    }


def _read_back(body: dict[str, Any]) -> dict[str, Any]:
    """A small Gemini-body decoder, written from the wire format, independent of the
    encoder: the body back to the same canonical fields."""
    turns: list[tuple[str, list[Item]]] = []
    for content in body["contents"]:
        items: list[Item] = []
        calls = 0
        for part in content["parts"]:
            signature = part.get("thoughtSignature")
            if "functionCall" in part:
                if calls == 0 and signature == gemini.SKIP_SIGNATURE:
                    signature = None
                calls += 1
                call = part["functionCall"]
                items.append(("call", call["name"], call["args"], signature))
            elif "functionResponse" in part:
                response = part["functionResponse"]["response"]
                is_error = "error" in response
                items.append(
                    (
                        "result",
                        part["functionResponse"]["name"],
                        is_error,
                        response["error" if is_error else "output"],
                    )
                )
            elif "inlineData" in part:
                items.append(
                    ("image", part["inlineData"]["mimeType"], part["inlineData"]["data"], None)
                )
            elif "fileData" in part:
                items.append(
                    ("image", part["fileData"]["mimeType"], None, part["fileData"]["fileUri"])
                )
            elif part.get("thought"):
                items.append(("thought", part["text"], signature))
            else:
                items.append(("text", part["text"], signature))
        turns.append((content["role"], items))
    config = body.get("generationConfig", {})
    calling = body.get("toolConfig", {}).get("functionCallingConfig")
    choice = None
    if calling:
        names = calling.get("allowedFunctionNames")
        choice = (
            names[0]
            if names
            else {"AUTO": "auto", "NONE": "none", "ANY": "required"}[calling["mode"]]
        )
    declarations = body["tools"][0]["functionDeclarations"] if "tools" in body else []
    return {
        "system": [p["text"] for p in body.get("systemInstruction", {}).get("parts", [])],
        "turns": turns,
        "tools": [(d["name"], d.get("description"), d.get("parameters")) for d in declarations],
        "tool_choice": choice,
        "max_tokens": config.get("maxOutputTokens"),
        "temperature": config.get("temperature"),
        "top_p": config.get("topP"),
        "stop": config.get("stopSequences"),
        "seed": config.get("seed"),
        "n": config.get("candidateCount"),
        "json": config.get("responseMimeType") == "application/json",
        "schema": config.get("responseSchema"),
        "budget": config.get("thinkingConfig", {}).get("thinkingBudget"),
    }


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_request_round_trip(request: ChatRequest) -> None:
    body = gemini.encode_request(request, "gemini-2.5-flash")
    body = msgspec.json.decode(msgspec.json.encode(body))  # what goes on the wire
    assert _read_back(body) == _kept(request)
    thinking = body.get("generationConfig", {}).get("thinkingConfig")
    if thinking is not None:
        assert thinking.get("includeThoughts", False) is (thinking["thinkingBudget"] != 0)
    for content in body["contents"]:  # the first call of every model turn is signed
        calls = [p for p in content["parts"] if "functionCall" in p]
        assert not calls or "thoughtSignature" in calls[0]
