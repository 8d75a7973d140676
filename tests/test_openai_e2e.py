"""The official ``openai`` SDK, sync and async, against a real gateway process: the
built-in ``local/echo`` and the fake upstream, streaming and not."""

from __future__ import annotations

import httpx
import openai
from support.procs import FakeUpstream, Gateway, sse_payloads

MESSAGE = "你好, world: streamed token by token"


def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0)


def test_echo_streams_word_by_word_with_usage(gateway: Gateway) -> None:
    stream = client(gateway).chat.completions.create(
        model="local/echo",
        messages=[{"role": "user", "content": MESSAGE}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].delta.role for c in chunks if c.choices].count("assistant") == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == MESSAGE
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) == len(MESSAGE.split())
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == len(MESSAGE.split())
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert {c.model for c in chunks} == {"local/echo"}
    assert len({c.id for c in chunks}) == 1


def test_echo_without_include_usage_has_no_usage_chunk(gateway: Gateway) -> None:
    chunks = list(
        client(gateway).chat.completions.create(
            model="local/echo", messages=[{"role": "user", "content": "a b"}], stream=True
        )
    )
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_echo_honours_max_tokens(gateway: Gateway) -> None:
    reply = client(gateway).chat.completions.create(
        model="local/echo",
        messages=[{"role": "user", "content": "one two three four five"}],
        max_tokens=2,
    )
    assert reply.choices[0].message.content == "one two "
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 2


def test_echo_non_streaming(gateway: Gateway) -> None:
    reply = client(gateway).chat.completions.create(
        model="local/echo",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": MESSAGE}],
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content == MESSAGE
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == len(MESSAGE.split())
    assert reply.model == "local/echo"


def test_models_list(gateway: Gateway) -> None:
    ids = [m.id for m in client(gateway).models.list()]
    assert "local/echo" in ids
    assert "fake/gen/5" in ids


def test_health(gateway: Gateway) -> None:
    body = httpx.get(f"{gateway.url}/health").json()
    assert body["status"] == "ok"


async def test_async_client_streaming_and_not(gateway: Gateway) -> None:
    aclient = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0)
    stream = await aclient.chat.completions.create(
        model="local/echo",
        messages=[{"role": "user", "content": MESSAGE}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        usage = chunk.usage or usage
    assert text == MESSAGE
    assert usage is not None and usage.completion_tokens == len(MESSAGE.split())
    reply = await aclient.chat.completions.create(
        model="fake/gen/7", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content == "".join(f"tok{i} " for i in range(7))
    assert reply.usage is not None and reply.usage.completion_tokens == 7
    await aclient.close()


def test_fake_upstream_stream_and_key_reaches_it(gateway: Gateway, fake: FakeUpstream) -> None:
    from support.procs import UPSTREAM_KEY

    stream = client(gateway).chat.completions.create(
        model="fake/gen/20",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(f"tok{i} " for i in range(20))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 20
    entry = fake.find("gen/20")
    headers = {k.lower(): v for k, v in entry["headers"].items()}
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert entry["body"]["stream"] is True
    assert entry["body"]["stream_options"]["include_usage"] is True


def test_client_tool_calls_through_echo(gateway: Gateway) -> None:
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    stream = client(gateway).chat.completions.create(
        model="local/echo",
        messages=[{"role": "user", "content": '/call get_weather {"city": "Paris", "days": 3}'}],
        tools=tools,  # type: ignore[arg-type]
        stream=True,
    )
    name, args, finish = "", "", None
    for chunk in stream:
        for call in chunk.choices[0].delta.tool_calls or []:
            assert call.index == 0
            name += (call.function.name or "") if call.function else ""
            args += (call.function.arguments or "") if call.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert name == "get_weather"
    assert args == '{"city": "Paris", "days": 3}'
    assert finish == "tool_calls"


def test_headers_of_a_stream(gateway: Gateway) -> None:
    body = {"model": "local/echo", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", f"{gateway.base_url}/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["x-request-id"].startswith("req_")
        raw = response.read()
    payloads = sse_payloads(raw)
    assert payloads[-1] == "[DONE]"


def test_keepalive_pings_while_waiting_for_the_first_token(gateway: Gateway) -> None:
    # The session gateway pings every 0.2 s; the upstream takes 1 s to its first token.
    body = {
        "model": "fake/gen/2?ttft=1",
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    with httpx.stream(
        "POST", f"{gateway.base_url}/chat/completions", json=body, timeout=10
    ) as response:
        raw = response.read()
    head = raw.split(b"data:", 1)[0]
    assert head.count(b": ping\n\n") >= 2
    assert sse_payloads(raw)[-1] == "[DONE]"
