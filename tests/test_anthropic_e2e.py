"""The official ``anthropic`` SDK, sync and async, against a real gateway process, at
``/anthropic`` and at the root: ``messages.create``, ``messages.stream`` (``text_stream``,
``get_final_message``), tool use, system prompts, the max-tokens stop, errors in
Anthropic's shape (before and during a stream), the headers Anthropic clients send, and
the model list."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from support.procs import UPSTREAM_KEY, FakeUpstream, Gateway, gateway_config, start_gateway

from tokenrelay.providers.http import with_client_headers
from tokenrelay.sse import SSEDecoder

pytestmark = pytest.mark.timeout(60)

MESSAGE = "你好, world: streamed token by token"
USER: Any = [{"role": "user", "content": MESSAGE}]
BASES = pytest.mark.parametrize("prefix", ["/anthropic", ""], ids=["anthropic-prefix", "root"])


def words(*texts: str) -> int:
    return sum(len(t.split()) for t in texts)


@pytest.fixture(scope="module")
def clients(gateway: Gateway) -> Iterator[dict[str, anthropic.Anthropic]]:
    """One client per base URL (each new client builds an SSL context)."""
    made = {
        prefix: anthropic.Anthropic(
            base_url=f"{gateway.url}{prefix}", api_key="sk-client", max_retries=0
        )
        for prefix in ("/anthropic", "")
    }
    yield made
    for client in made.values():
        client.close()


def named_events(raw: bytes) -> list[tuple[str | None, Any]]:
    return [(e.event, json.loads(e.data)) for e in SSEDecoder().iter([raw])]


# --- messages.create / messages.stream ------------------------------------------------------


@BASES
def test_create(clients: dict[str, anthropic.Anthropic], prefix: str) -> None:
    message = clients[prefix].messages.create(model="local/echo", max_tokens=100, messages=USER)
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == "local/echo"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == MESSAGE  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens == words(MESSAGE)
    assert message.usage.output_tokens == words(MESSAGE)


@BASES
def test_stream_text_stream_and_final_message(
    clients: dict[str, anthropic.Anthropic], prefix: str
) -> None:
    with clients[prefix].messages.stream(model="local/echo", max_tokens=100, messages=USER) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    assert "".join(pieces) == MESSAGE
    assert len(pieces) == words(MESSAGE), "one delta per word, as local/echo streams them"
    assert final.content[0].text == MESSAGE  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == words(MESSAGE)
    assert final.model == "local/echo"


def test_the_wire_of_a_stream(gateway: Gateway) -> None:
    """Named events exactly as Anthropic sends them, each ``event:`` matching the
    ``type`` inside, one text block, the usage in ``message_delta``."""
    body = {"model": "local/echo", "max_tokens": 100, "stream": True, "messages": USER}
    with httpx.stream("POST", f"{gateway.url}/v1/messages", json=body, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"].startswith("req_")
        raw = response.read()
    events = named_events(raw)
    assert all(name == data["type"] for name, data in events)
    kinds = [name for name, _ in events if name != "ping"]
    n = words(MESSAGE)
    assert kinds == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * n,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    delta = next(data for name, data in events if name == "message_delta")
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == n


def test_stream_through_an_upstream_of_each_protocol(
    clients: dict[str, anthropic.Anthropic], fake: FakeUpstream
) -> None:
    for model in ("fake/gen/6", "fakeant/gen/6", "fakegem/gen/6"):
        with clients["/anthropic"].messages.stream(model=model, max_tokens=100, messages=USER) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert text == "".join(f"tok{i} " for i in range(6))
        assert final.usage.output_tokens == 6
        assert final.usage.input_tokens == words(MESSAGE)  # the fake counts words it read
        assert final.model == model


# --- tools, system prompts, max tokens ---------------------------------------------------------

WEATHER: Any = [
    {
        "name": "get_weather",
        "description": "Current weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]
CALL = '/call get_weather {"city": "Paris", "days": 3}'


@BASES
def test_tool_use_through_local_echo(clients: dict[str, anthropic.Anthropic], prefix: str) -> None:
    client = clients[prefix]
    messages: Any = [{"role": "user", "content": CALL}]
    message = client.messages.create(
        model="local/echo", max_tokens=100, messages=messages, tools=WEATHER
    )
    assert message.stop_reason == "tool_use"
    [use] = message.content
    assert use.type == "tool_use" and use.name == "get_weather"
    assert use.input == {"city": "Paris", "days": 3}
    assert use.id
    with client.messages.stream(
        model="local/echo", max_tokens=100, messages=messages, tools=WEATHER
    ) as stream:
        partial = "".join(e.partial_json for e in stream if e.type == "input_json")
        final = stream.get_final_message()
    assert json.loads(partial) == {"city": "Paris", "days": 3}
    assert final.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "input", None)) for b in final.content] == [
        ("tool_use", {"city": "Paris", "days": 3})
    ]
    # the answer goes back as a tool_result, and the conversation goes on
    follow: Any = [
        *messages,
        {"role": "assistant", "content": final.content},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": use.id, "content": "sunny"},
                {"type": "text", "text": "thanks"},
            ],
        },
    ]
    reply = client.messages.create(
        model="local/echo", max_tokens=100, messages=follow, tools=WEATHER
    )
    assert reply.stop_reason == "end_turn"
    assert reply.content[0].text == "thanks"  # type: ignore[union-attr]


def test_local_echo_answers_a_tool_result(clients: dict[str, anthropic.Anthropic]) -> None:
    messages: Any = [
        {"role": "user", "content": CALL},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
        },
    ]
    reply = clients[""].messages.create(
        model="local/echo", max_tokens=100, messages=messages, tools=WEATHER
    )
    assert reply.stop_reason == "end_turn"
    assert reply.content[0].text == "sunny"  # type: ignore[union-attr]


def test_without_tools_a_call_line_is_just_text(clients: dict[str, anthropic.Anthropic]) -> None:
    message = clients[""].messages.create(
        model="local/echo", max_tokens=100, messages=[{"role": "user", "content": CALL}]
    )
    assert message.content[0].text == CALL  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "system",
    ["You are terse.", [{"type": "text", "text": "You are"}, {"type": "text", "text": "terse."}]],
    ids=["string", "blocks"],
)
def test_system_prompt(clients: dict[str, anthropic.Anthropic], system: Any) -> None:
    """local/echo counts one input token per word of every text it was given: the system
    prompt is read (once), and it is not echoed."""
    message = clients["/anthropic"].messages.create(
        model="local/echo", max_tokens=100, system=system, messages=USER
    )
    assert message.content[0].text == MESSAGE  # type: ignore[union-attr]
    assert message.usage.input_tokens == words("You are terse.", MESSAGE)


@pytest.mark.parametrize("streamed", [True, False])
def test_max_tokens_stop(clients: dict[str, anthropic.Anthropic], streamed: bool) -> None:
    messages: Any = [{"role": "user", "content": "one two three four five"}]
    message: Any
    if streamed:
        with clients[""].messages.stream(model="local/echo", max_tokens=2, messages=messages) as s:
            text = "".join(s.text_stream)
            message = s.get_final_message()
    else:
        message = clients[""].messages.create(model="local/echo", max_tokens=2, messages=messages)
        text = message.content[0].text
    assert text == "one two "
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 2


# --- errors in Anthropic's shape ----------------------------------------------------------------


def assert_anthropic_error(body: Any, kind: str) -> str:
    assert isinstance(body, dict) and body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == kind and body["error"]["message"]
    return str(body["error"]["message"])


@BASES
def test_unknown_model_is_not_found(clients: dict[str, anthropic.Anthropic], prefix: str) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        clients[prefix].messages.create(model="nobody/nothing", max_tokens=10, messages=USER)
    assert info.value.status_code == 404
    assert "nobody/nothing" in assert_anthropic_error(info.value.body, "not_found_error")


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"temperature": 5}, "temperature"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"tools": [{"name": "x"}]}, "tools[0].input_schema"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"thinking": {"type": "enabled", "budget_tokens": "lots"}}, "thinking.budget_tokens"),
        (
            {"messages": [{"role": "assistant", "content": [{"type": "tool_result"}]}]},
            "messages[0].content[0]",
        ),
    ],
)
def test_invalid_body_is_bad_request_naming_the_field(
    clients: dict[str, anthropic.Anthropic], patch: dict[str, Any], field: str
) -> None:
    # extra_body: the SDK's types would refuse most of these before sending them
    with pytest.raises(anthropic.BadRequestError) as info:
        clients["/anthropic"].messages.create(
            model="local/echo", max_tokens=10, messages=USER, extra_body=patch
        )
    message = assert_anthropic_error(info.value.body, "invalid_request_error")
    assert message.startswith(field)


@pytest.mark.parametrize(
    ("content", "field"),
    [(b'{"model": "local/echo", ', "JSON"), (b'{"model": "local/echo", "messages": []}', "")],
)
def test_raw_bad_requests_get_anthropic_errors(
    gateway: Gateway, content: bytes, field: str
) -> None:
    response = httpx.post(f"{gateway.url}/anthropic/v1/messages", content=content, timeout=10)
    assert response.status_code == 400
    message = assert_anthropic_error(response.json(), "invalid_request_error")
    assert field in message


def test_missing_max_tokens_is_named(gateway: Gateway) -> None:
    body = {"model": "local/echo", "messages": USER}
    response = httpx.post(f"{gateway.url}/v1/messages", json=body, timeout=10)
    assert response.status_code == 400
    assert assert_anthropic_error(response.json(), "invalid_request_error").startswith("max_tokens")


def test_unknown_route_under_anthropic_is_anthropic_shaped(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/anthropic/v1/nothing", timeout=10)
    assert response.status_code == 404
    assert_anthropic_error(response.json(), "not_found_error")


@pytest.fixture(scope="module")
def no_retry_gateway(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    """A gateway that does not retry: the session one retries a 429 after its
    Retry-After, which is right for users and too slow for a test of the error shape."""
    gw = start_gateway(workdir, gateway_config(fake, retries={"max_attempts": 1}))
    yield gw
    gw.proc.stop()


@pytest.mark.parametrize("provider", ["fake", "fakeant", "fakegem"])
@pytest.mark.parametrize("streamed", [True, False])
def test_upstream_429_is_a_rate_limit_error_with_retry_after(
    no_retry_gateway: Gateway, provider: str, streamed: bool
) -> None:
    """Whatever the upstream's protocol, an Anthropic client gets Anthropic's
    ``rate_limit_error`` with the upstream's ``Retry-After``."""
    client = anthropic.Anthropic(
        base_url=f"{no_retry_gateway.url}/anthropic", api_key="sk-client", max_retries=0
    )
    model = f"{provider}/gen/3?status=429&retry_after=7"
    with pytest.raises(anthropic.RateLimitError) as info:
        if streamed:
            with client.messages.stream(model=model, max_tokens=10, messages=USER) as stream:
                stream.get_final_message()
        else:
            client.messages.create(model=model, max_tokens=10, messages=USER)
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "7"
    message = assert_anthropic_error(info.value.body, "rate_limit_error")
    assert UPSTREAM_KEY not in message
    client.close()


@pytest.mark.parametrize(
    ("model", "upstream_message"),
    [
        ("fakeant/gen/20?error_after=5", "Overloaded"),
        ("fake/gen/20?error_after=3", "The server had an error (fake in-band)."),
        ("fakegem/gen/20?error_after=2", "The model is overloaded."),
        ("fake/gen/20?drop_after=3", "failed while streaming"),
        ("fakeant/gen/20?drop_after=5", "failed while streaming"),
    ],
)
def test_failure_mid_stream_is_an_error_event_the_sdk_raises(
    clients: dict[str, anthropic.Anthropic], gateway: Gateway, model: str, upstream_message: str
) -> None:
    text = ""
    client = clients["/anthropic"]
    with (
        pytest.raises(anthropic.APIStatusError) as info,
        client.messages.stream(model=model, max_tokens=100, messages=USER) as stream,
    ):
        for piece in stream.text_stream:
            text += piece
    assert text == "tok0 tok1 ", "what came before the failure was delivered"
    assert upstream_message in info.value.message
    # on the wire: an ``event: error`` frame in Anthropic's shape ends the stream
    body = {"model": model, "max_tokens": 100, "stream": True, "messages": USER}
    with httpx.stream("POST", f"{gateway.url}/v1/messages", json=body, timeout=10) as response:
        assert response.status_code == 200
        events = named_events(response.read())
    name, data = events[-1]
    assert name == "error"
    assert upstream_message in assert_anthropic_error(data, data["error"]["type"])
    assert "message_stop" not in [n for n, _ in events]


# --- headers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"x-api-key": "sk-client", "anthropic-version": "2023-06-01"},
        {"authorization": "Bearer sk-client", "anthropic-version": "2023-06-01"},
        {
            "x-api-key": "sk-client",
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "interleaved-thinking-2025-05-14",
        },
        {},
    ],
    ids=["x-api-key", "authorization", "beta", "none"],
)
def test_anthropic_headers_are_accepted(gateway: Gateway, headers: dict[str, str]) -> None:
    body = {"model": "local/echo", "max_tokens": 10, "messages": USER}
    response = httpx.post(f"{gateway.url}/v1/messages", json=body, headers=headers, timeout=10)
    assert response.status_code == 200
    assert response.json()["content"][0]["text"] == MESSAGE


def test_sdk_auth_token_and_api_key(gateway: Gateway) -> None:
    for client in (
        anthropic.Anthropic(base_url=gateway.url, auth_token="tok-client", max_retries=0),
        anthropic.Anthropic(base_url=gateway.url, api_key="sk-client", max_retries=0),
    ):
        with client:
            message = client.messages.create(model="local/echo", max_tokens=10, messages=USER)
        assert message.content[0].text == MESSAGE  # type: ignore[union-attr]


def test_the_upstream_gets_the_gateways_key_and_version(
    clients: dict[str, anthropic.Anthropic], fake: FakeUpstream
) -> None:
    clients["/anthropic"].messages.create(
        model="fakeant/echo", max_tokens=10, messages=USER, extra_headers={"x-api-key": "sk-client"}
    )
    entry = fake.find("echo")
    headers = {k.lower(): v for k, v in entry["headers"].items()}
    assert headers["x-api-key"] == UPSTREAM_KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert "sk-client" not in json.dumps(headers), "the client's key is not forwarded"
    assert entry["body"]["messages"] == USER and entry["body"]["stream"] is True


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "create"])
def test_the_clients_betas_reach_an_anthropic_upstream_and_no_other(
    clients: dict[str, anthropic.Anthropic], fake: FakeUpstream, streamed: bool
) -> None:
    """``client.beta.messages`` with ``betas``: the ``anthropic-beta`` header goes on to
    an Anthropic upstream as sent; an OpenAI or Gemini upstream never sees it."""
    betas = ["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"]
    beta = clients["/anthropic"].beta.messages
    for provider in ("fakeant", "fake", "fakegem"):
        kwargs: Any = {"model": f"{provider}/echo", "max_tokens": 10, "messages": USER}
        if streamed:
            with beta.stream(**kwargs, betas=betas) as s:
                text = "".join(s.text_stream)
        else:
            text = beta.create(**kwargs, betas=betas).content[0].text  # type: ignore[union-attr]
        assert text == MESSAGE
        headers = {k.lower(): v for k, v in fake.find("echo")["headers"].items()}
        if provider == "fakeant":
            assert headers["anthropic-beta"] == ",".join(betas)
        else:
            assert "anthropic-beta" not in headers


def test_a_configured_beta_and_the_clients_are_both_sent() -> None:
    configured = {"Content-Type": "application/json", "Anthropic-Beta": "files-api-2025-04-14"}
    sent = with_client_headers(configured, {"anthropic-beta": "context-1m-2025-08-07"})
    assert sent["Anthropic-Beta"] == "files-api-2025-04-14,context-1m-2025-08-07"
    assert with_client_headers({}, {"anthropic-beta": "x"}) == {"anthropic-beta": "x"}
    assert configured["Anthropic-Beta"] == "files-api-2025-04-14"  # the provider's own: kept


# --- models --------------------------------------------------------------------------------------


@BASES
def test_models_list_in_anthropics_shape(
    clients: dict[str, anthropic.Anthropic], gateway: Gateway, prefix: str
) -> None:
    models = list(clients[prefix].models.list())
    ids = [m.id for m in models]
    assert "local/echo" in ids and "fake/gen/5" in ids
    assert all(m.type == "model" and m.display_name for m in models)
    raw = httpx.get(
        f"{gateway.url}{prefix}/v1/models", headers={"anthropic-version": "2023-06-01"}, timeout=10
    ).json()
    assert set(raw) == {"data", "has_more", "first_id", "last_id"}
    assert raw["has_more"] is False
    assert raw["first_id"] == raw["data"][0]["id"] and raw["last_id"] == raw["data"][-1]["id"]
    assert {"type", "id", "display_name", "created_at"} <= set(raw["data"][0])


# --- async ---------------------------------------------------------------------------------------


async def test_async_client_create_stream_and_tools(gateway: Gateway) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=f"{gateway.url}/anthropic", api_key="sk-client", max_retries=0
    ) as client:
        message = await client.messages.create(model="local/echo", max_tokens=100, messages=USER)
        assert message.content[0].text == MESSAGE  # type: ignore[union-attr]
        async with client.messages.stream(
            model="fakegem/gen/4", max_tokens=100, messages=USER
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
            final = await stream.get_final_message()
        assert text == "tok0 tok1 tok2 tok3 "
        assert final.usage.output_tokens == 4 and final.stop_reason == "end_turn"
        tool = await client.messages.create(
            model="local/echo",
            max_tokens=100,
            messages=[{"role": "user", "content": CALL}],
            tools=WEATHER,
        )
        assert tool.stop_reason == "tool_use"
        assert tool.content[0].input == {"city": "Paris", "days": 3}  # type: ignore[union-attr]
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.create(model="nobody/nothing", max_tokens=10, messages=USER)
