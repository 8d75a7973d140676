"""The official ``openai`` SDK's Responses API against a real gateway process: function
tools over two turns, encrypted reasoning carried across turns and protocols, built-in
tools, structured output, and errors in the Responses shape. (Every recording and every
client x upstream pair: ``test_translation_matrix.py``.)"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest
from support.procs import UPSTREAM_KEY, FakeUpstream, Gateway

from tokenrelay.fake.scenes import signature
from tokenrelay.protocols.responses import codec

# a client that declares it resumes gets ids on its frames (README, "Resume")
RESUMES = {"X-Tokenrelay-Resume": "1"}

pytestmark = pytest.mark.timeout(60)

INCLUDE: Any = ["reasoning.encrypted_content"]
TOOLS: Any = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
    {
        "type": "function",
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
]
ASK = 'Checking both.\n/call get_weather {"city": "Paris"}\n/call get_time {"tz": "CET"}'


@pytest.fixture(scope="module")
def oa(gateway: Gateway) -> Any:
    with openai.OpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0) as c:
        yield c


def _log_body(fake: FakeUpstream, model: str) -> dict[str, Any]:
    return dict(fake.find(model)["body"])


@pytest.mark.parametrize("provider", ["fake", "fakeant", "fakegem", "fakeresp"])
def test_function_tools_over_two_turns(oa: Any, fake: FakeUpstream, provider: str) -> None:
    """Turn 1 asks for two calls in one turn (the fake's ``tools`` scene, in each
    upstream wire); turn 2 sends the SDK's own output items back with a
    ``function_call_output`` for each: the upstream gets the calls and the results,
    paired by call id, in its own wire."""
    first: Any = [{"role": "user", "content": ASK}]
    with oa.responses.stream(model=f"{provider}/tools", input=first, tools=TOOLS) as stream:
        argument_deltas = [e for e in stream if e.type == "response.function_call_arguments.delta"]
        response = stream.get_final_response()
    calls = [o for o in response.output if o.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "CET"}),
    ]
    assert argument_deltas and response.output_text == "Checking both."
    assert len({c.call_id for c in calls}) == 2 and response.status == "completed"
    fake.clear()
    results: Any = [
        {"type": "function_call_output", "call_id": c.call_id, "output": f"result {i}"}
        for i, c in enumerate(calls)
    ]
    second = oa.responses.create(
        model=f"{provider}/gen/2", input=[*first, *response.output, *results], tools=TOOLS
    )
    assert second.output_text == "tok0 tok1 "
    body = json.dumps(_log_body(fake, "gen/2"))
    for i, call in enumerate(calls):  # ids and results reached the upstream
        assert f"result {i}" in body
        if provider != "fakegem":  # Gemini matches results by name (gemini.DROPPED)
            assert call.call_id in body


def test_function_tool_round_trip_through_local_echo(oa: Any) -> None:
    first: Any = [{"role": "user", "content": '/call get_weather {"city": "Oslo"}'}]
    response = oa.responses.create(model="local/echo", input=first, tools=TOOLS)
    [call] = [o for o in response.output if o.type == "function_call"]
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Oslo"})
    output: Any = {"type": "function_call_output", "call_id": call.call_id, "output": "-3°C"}
    events = list(
        oa.responses.create(
            model="local/echo", input=[*first, *response.output, output], tools=TOOLS, stream=True
        )
    )
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "-3°C" and events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_claude_thinking_comes_back_as_encrypted_content_and_round_trips(
    oa: Any, fake: FakeUpstream
) -> None:
    """An Anthropic upstream's thinking arrives as reasoning summary events; with
    ``include: ["reasoning.encrypted_content"]`` its signature is the reasoning item's
    ``encrypted_content``, and sent back on the next turn it is the thinking block's
    signature again."""
    first: Any = [{"role": "user", "content": "hello there"}]
    with oa.responses.stream(
        model="fakeant/think", input=first, include=INCLUDE, reasoning={"effort": "low"}
    ) as stream:
        kinds = [e.type for e in stream]
        response = stream.get_final_response()
    assert "response.reasoning_summary_text.delta" in kinds
    [reasoning] = [o for o in response.output if o.type == "reasoning"]
    thought = "Reasoning about: hello there"
    assert "".join(s.text for s in reasoning.summary) == thought
    assert reasoning.encrypted_content == signature(thought)
    plain = oa.responses.create(model="fakeant/think", input=first, stream=True)
    assert all(
        getattr(getattr(e, "item", None), "encrypted_content", None) is None for e in plain
    ), "no encrypted_content unless include asks for it"
    fake.clear()
    again: Any = [*first, *response.output, {"role": "user", "content": "and then?"}]
    oa.responses.create(model="fakeant/echo", input=again, reasoning={"effort": "low"})
    assistant = _log_body(fake, "echo")["messages"][1]["content"]
    assert assistant[0] == {
        "type": "thinking",
        "thinking": thought,
        "signature": signature(thought),
    }


def test_responses_encrypted_reasoning_round_trips_through_an_anthropic_client(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    """A Responses upstream's ``encrypted_content`` reaches an Anthropic client as the
    thinking block's signature (as Anthropic's own would) and goes back to the upstream
    as the reasoning item's ``encrypted_content``."""
    with anthropic.Anthropic(
        base_url=f"{gateway.url}/anthropic", api_key="sk-client", max_retries=0
    ) as an:
        first: Any = [{"role": "user", "content": "hello there"}]
        reply = an.messages.create(model="fakeresp/think", max_tokens=1000, messages=first)
        [thinking] = [b for b in reply.content if b.type == "thinking"]
        assert thinking.signature == signature("Reasoning about: hello there")
        fake.clear()
        history: Any = [
            *first,
            {"role": "assistant", "content": reply.content},
            {"role": "user", "content": "next"},
        ]
        an.messages.create(model="fakeresp/echo", max_tokens=1000, messages=history)
    body = _log_body(fake, "echo")
    [item] = [i for i in body["input"] if i.get("type") == "reasoning"]
    assert item["encrypted_content"] == thinking.signature
    assert body["store"] is False and body["include"] == INCLUDE


def test_built_in_tools_pass_through_to_a_responses_upstream_only(
    oa: Any, fake: FakeUpstream
) -> None:
    tools: Any = [{"type": "web_search"}, TOOLS[0], {"type": "custom", "name": "apply_patch"}]
    fake.clear()
    oa.responses.create(model="fakeresp/echo", input="hi", tools=tools, store=False)
    body = _log_body(fake, "echo")
    assert body["tools"] == tools and body["store"] is False  # as the client wrote it
    fake.clear()
    oa.responses.create(model="fake/echo", input="hi", tools=tools)
    sent = _log_body(fake, "echo")["tools"]
    assert [t["function"]["name"] for t in sent] == ["get_weather", "apply_patch"]
    assert sent[1]["function"]["parameters"]["required"] == ["input"]  # DROPPED "custom"
    assert any(f.startswith("built-in tools") for f, _, _ in codec.DROPPED)


def test_text_format_json_schema_becomes_the_upstreams_response_format(
    oa: Any, fake: FakeUpstream
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    text: Any = {"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}}
    fake.clear()
    oa.responses.create(model="fake/echo", input="hi", text=text)
    assert _log_body(fake, "echo")["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": schema, "strict": True},
    }


def test_max_output_tokens_ends_incomplete(oa: Any) -> None:
    response = oa.responses.create(
        model="local/echo", input="one two three four", max_output_tokens=2
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "one two "
    events = list(
        oa.responses.create(
            model="fakeresp/echo?limit=1", input="a b c", max_output_tokens=1, stream=True
        )
    )
    assert events[-1].type == "response.incomplete"


def test_errors_are_in_the_openai_shape(gateway: Gateway, oa: Any) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oa.responses.create(model="local/echo", input=[{"role": "robot", "content": "x"}])
    assert caught.value.body["param"] == "input[0].role"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        oa.responses.create(model="nowhere/none", input="hi")
    with pytest.raises(openai.BadRequestError) as upstream:  # the upstream's, verbatim
        oa.responses.create(model="fakeresp/echo?status=400", input="hi")
    assert "fake upstream failure (400)" in upstream.value.message
    assert UPSTREAM_KEY not in str(upstream.value.body)
    raw = httpx.post(f"{gateway.base_url}/responses", content=b"{", timeout=10)
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"


def test_the_route_without_v1_and_the_stream_headers(gateway: Gateway) -> None:
    body = {"model": "local/echo", "input": "a b", "stream": True}
    with httpx.stream(
        "POST", f"{gateway.url}/responses", json=body, headers=RESUMES, timeout=10
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-stream-id"]
        raw = r.read()
    assert raw.count(b"event: response.") >= 8 and b"id: " in raw


def test_custom_tools_are_called_as_custom_tools(oa: Any, fake: FakeUpstream) -> None:
    """A custom (free-form) tool reaches a non-Responses upstream as a function tool
    taking one string (``DROPPED``); its call comes back to the client as a
    ``custom_tool_call`` with that string, and goes upstream again as a call with it."""
    tools: Any = [{"type": "custom", "name": "apply_patch", "description": "Apply a patch"}]
    patch = "*** Begin Patch\n*** End Patch"
    ask: Any = [{"role": "user", "content": "/call apply_patch " + json.dumps({"input": patch})}]
    with oa.responses.stream(model="fake/tools", input=ask, tools=tools) as stream:
        kinds = [e.type for e in stream]
        response = stream.get_final_response()
    [call] = response.output
    assert call.type == "custom_tool_call" and call.input == patch and call.name == "apply_patch"
    assert "response.custom_tool_call_input.done" in kinds
    fake.clear()
    result: Any = {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "done"}
    oa.responses.create(model="fake/echo", input=[*ask, call, result], tools=tools)
    messages = _log_body(fake, "echo")["messages"]
    [sent] = messages[1]["tool_calls"]
    assert json.loads(sent["function"]["arguments"]) == {"input": patch}
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "done"}


def test_a_responses_stream_resumes_in_its_own_protocol(gateway: Gateway) -> None:
    """The stream hub serves Responses streams as any other: re-attached after a frame
    (``Last-Event-ID``), the client gets exactly the events after it, still in the
    Responses wire, their ``sequence_number``s continuing."""
    from tokenrelay.sse import SSEDecoder

    def events(response: httpx.Response) -> list[tuple[str | None, dict[str, Any]]]:
        decoder = SSEDecoder()
        out = [(e.id, json.loads(e.data)) for c in response.iter_raw() for e in decoder.feed(c)]
        return out

    body = {"model": "local/echo", "input": "one two three four five six", "stream": True}
    with httpx.stream(
        "POST", f"{gateway.base_url}/responses", json=body, headers=RESUMES, timeout=10
    ) as r:
        stream_id = r.headers["x-stream-id"]
        whole = events(r)
    assert [d["sequence_number"] for _, d in whole] == list(range(len(whole)))
    ids = [i for i, _ in whole]
    cut = next(k for k in range(4, len(ids)) if ids[k] != ids[k - 1]) - 1  # a frame's last event
    url = f"{gateway.base_url}/streams/{stream_id}"
    with httpx.stream("GET", url, headers={"Last-Event-ID": str(ids[cut])}, timeout=10) as r:
        assert r.status_code == 200
        rest = events(r)
    assert [d for _, d in rest] == [d for _, d in whole[cut + 1 :]]
    assert rest[-1][1]["type"] == "response.completed"
