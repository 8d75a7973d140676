"""The OpenAI Agents SDK (``openai-agents``, Responses by default) against a real gateway
process: ``Runner.run`` with a function tool, the SDK's default client pointed at the
gateway (``set_default_openai_client``), tracing off (no traffic but the gateway's).

On ``local/echo`` the whole default loop runs: the model asks for the tool (``/call``),
the SDK runs it and sends a ``function_call_output``, the next answer (local/echo echoes
a tool result) is the final output. On each upstream protocol of the fake (its ``tools``
scene asks again on every turn) the run stops at the tool's result
(``stop_on_first_tool``), after the call went through that upstream's wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from agents import Agent, Runner, function_tool, set_default_openai_client, set_tracing_disabled
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway

pytestmark = pytest.mark.timeout(60)

calls: list[str] = []
# The SDK reads "local/echo" as provider "local" (its MultiProvider knows only openai/ and
# litellm/ prefixes): the gateway config gives each deployment a name without a slash,
# as a user of the SDK would.
ALIASES = {
    "echo-local": "local/echo",
    "tools-openai": "fake/tools",
    "tools-anthropic": "fakeant/tools",
    "tools-gemini": "fakegem/tools",
    "tools-responses": "fakeresp/tools",
}


@pytest.fixture(scope="module")
def agents_gateway(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    models = [{"name": alias, "deployments": [d]} for alias, d in ALIASES.items()]
    gw = start_gateway(workdir, gateway_config(fake, models=models))
    yield gw
    gw.proc.stop()


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    calls.append(city)
    return f"sunny and 21 degrees in {city}"


def _run(gateway: Gateway, agent: Agent[Any], prompt: str) -> Any:
    async def go() -> Any:
        client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0)
        set_default_openai_client(client, use_for_tracing=False)
        set_tracing_disabled(True)
        try:
            return await Runner.run(agent, prompt)
        finally:
            await client.close()

    return asyncio.run(go())


ASK = 'What is the weather?\n/call get_weather {"city": "Paris"}'


def test_a_whole_tool_loop_on_local_echo(agents_gateway: Gateway) -> None:
    calls.clear()
    agent = Agent(
        name="weather", instructions="Use tools.", model="echo-local", tools=[get_weather]
    )
    result = _run(agents_gateway, agent, ASK)
    assert calls == ["Paris"]
    assert result.final_output == "sunny and 21 degrees in Paris"
    kinds = [item.type for item in result.new_items]
    assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"]


@pytest.mark.parametrize("model", [m for m in ALIASES if m.startswith("tools-")])
def test_the_tool_is_called_through_every_upstream(
    agents_gateway: Gateway, fake: FakeUpstream, model: str
) -> None:
    calls.clear()
    agent = Agent(
        name="weather", model=model, tools=[get_weather], tool_use_behavior="stop_on_first_tool"
    )
    result = _run(agents_gateway, agent, ASK)
    assert calls == ["Paris"]
    assert result.final_output == "sunny and 21 degrees in Paris"
    assert "get_weather" in str(fake.find("tools")["body"])  # offered in the upstream's wire
