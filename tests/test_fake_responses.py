"""The fake upstream's OpenAI Responses wire (``/v1/responses``): its scenes, read by the
official ``openai`` SDK straight from the fake (no gateway), and its replays."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from support.paths import FIXTURES, fixtures_dir

from tokenrelay.fake import FakeUpstream, start
from tokenrelay.fake.scenes import signature

pytestmark = pytest.mark.timeout(30)

TOOLS: Any = [
    {"type": "function", "name": "f", "parameters": {"type": "object"}},
    {"type": "function", "name": "g", "parameters": {"type": "object"}},
]


@pytest.fixture
async def client() -> AsyncIterator[tuple[FakeUpstream, openai.AsyncOpenAI]]:
    up = await start(fixtures=FIXTURES if FIXTURES.is_dir() else None)
    sdk = openai.AsyncOpenAI(base_url=f"{up.base_url}/v1", api_key="k", max_retries=0)
    try:
        yield up, sdk
    finally:
        await sdk.close()
        await up.close()


async def _events(sdk: openai.AsyncOpenAI, **kwargs: Any) -> list[Any]:
    return [e async for e in await sdk.responses.create(stream=True, **kwargs)]


async def test_echo_and_gen_stream_the_real_event_sequence(client: Any) -> None:
    up, sdk = client
    events = await _events(sdk, model="echo", instructions="be brief", input="one two three")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events[:4]] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ["one ", "two ", "three"]
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.usage.input_tokens == 5  # instructions and input words
    assert final.response.usage.output_tokens == 3
    async with sdk.responses.stream(model="gen/2", input="x") as stream:
        response = await stream.get_final_response()
    assert response.output_text == "tok0 tok1 " and up.log[-1].path == "/v1/responses"


async def test_tools_and_think_scenes(client: Any) -> None:
    _, sdk = client
    ask = 'Both.\n/call f {"a": 1}\n/call g {"b": "two words"}'
    async with sdk.responses.stream(model="tools", input=ask, tools=TOOLS) as stream:
        response = await stream.get_final_response()
    calls = [
        (o.name, json.loads(o.arguments)) for o in response.output if o.type == "function_call"
    ]
    assert calls == [("f", {"a": 1}), ("g", {"b": "two words"})]
    assert response.output_text == "Both."
    async with sdk.responses.stream(model="think", input="hi there") as stream:
        kinds = [e.type async for e in stream]
        response = await stream.get_final_response()
    assert "response.reasoning_summary_text.delta" in kinds
    [reasoning] = [o for o in response.output if o.type == "reasoning"]
    assert reasoning.summary[0].text == "Reasoning about: hi there"
    assert reasoning.encrypted_content == signature("Reasoning about: hi there")
    assert response.usage is not None and response.usage.output_tokens_details.reasoning_tokens == 4


async def test_limit_non_streaming_and_faults(client: Any) -> None:
    _, sdk = client
    events = await _events(sdk, model="echo?limit=1", input="a b c d", max_output_tokens=2)
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    body = await sdk.responses.create(model="echo?limit=1", input="a b c d", max_output_tokens=2)
    assert body.output_text == "a b " and body.status == "incomplete"
    body = await sdk.responses.create(model="echo", input="a b")
    assert body.output_text == "a b" and body.usage is not None and body.usage.input_tokens == 2
    events = await _events(sdk, model="gen/9?error_after=5", input="x")
    assert events[-1].type == "error" and "fake in-band" in events[-1].message
    with pytest.raises(openai.RateLimitError):
        await sdk.responses.create(model="echo?status=429", input="x")


async def test_recordings_replay_on_the_responses_route(client: Any) -> None:
    fixtures_dir()
    _, sdk = client
    model = "replay/openai/responses_function_call"
    async with sdk.responses.stream(model=model, input="x") as stream:
        response = await stream.get_final_response()
    [call] = response.output
    assert call.type == "function_call" and call.name == "multiply"
    assert json.loads(call.arguments) == {"a": 1231, "b": 2331}
