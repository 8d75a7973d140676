"""The fake upstream (tokenrelay.fake): wire formats, replay, faults, log, robustness."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from support.paths import FIXTURES, fixture_files, fixtures_dir

from tokenrelay.fake import FakeUpstream, start
from tokenrelay.fake.plan import split_events
from tokenrelay.sse import ServerSentEvent, SSEDecoder

pytestmark = pytest.mark.timeout(30)

USER = [{"role": "user", "content": "what is the capital of France"}]
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "what is the capital of France"}]}]}


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    up = await start(fixtures=FIXTURES if FIXTURES.is_dir() else None)
    try:
        yield up
    finally:
        await up.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        yield s


def route(proto: str, model: str, *, stream: bool = True) -> tuple[str, dict[str, Any]]:
    """(path, body) for ``model`` on the route of ``proto``."""
    if proto == "gemini":
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"/v1beta/models/{quote(model, safe='/')}:{method}", dict(GEMINI_BODY)
    path = "/v1/messages" if proto == "anthropic" else "/v1/chat/completions"
    body: dict[str, Any] = {"model": model, "messages": USER, "stream": stream}
    if proto == "anthropic":
        body["max_tokens"] = 100
    return path, body


async def http_chunks(response: aiohttp.ClientResponse) -> list[bytes]:
    """The body as the HTTP chunks the server wrote."""
    chunks: list[bytes] = []
    current = b""
    async for data, end in response.content.iter_chunks():
        current += data
        if end:
            chunks.append(current)
            current = b""
    if current:
        chunks.append(current)
    return chunks


def events(data: bytes) -> list[ServerSentEvent]:
    return list(SSEDecoder().iter([data]))


async def stream(
    session: aiohttp.ClientSession, up: FakeUpstream, proto: str, model: str, **extra: Any
) -> tuple[int, list[bytes]]:
    path, body = route(proto, model)
    body.update(extra)
    async with session.post(up.base_url + path, json=body) as response:
        return response.status, await http_chunks(response)


# --- replay ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_replay_is_byte_identical_one_event_per_chunk(
    path: Path, session: aiohttp.ClientSession
) -> None:
    folder = fixtures_dir()
    expected = path.read_bytes()
    proto = {"anthropic": "anthropic", "gemini": "gemini"}.get(path.parent.name, "openai")
    async with await start(fixtures=folder) as up:
        p, body = route(proto, f"replay/{path.parent.name}/{path.stem}")
        async with session.post(up.base_url + p, json=body) as response:
            assert response.status == 200
            assert response.headers["content-type"] == "text/event-stream"
            chunks = await http_chunks(response)
    assert b"".join(chunks) == expected
    assert chunks == split_events(expected)
    for chunk in chunks[:-1]:
        assert len(events(chunk)) == 1  # exactly one dispatched event per write


def test_split_events_keeps_comments_with_the_next_event() -> None:
    data = b": keep-alive\n\n: again\n\ndata: 1\n\nevent: x\r\ndata: 2\r\n\r\ntrailing"
    assert split_events(data) == [
        b": keep-alive\n\n: again\n\ndata: 1\n\n",
        b"event: x\r\ndata: 2\r\n\r\ntrailing",
    ]


async def test_replay_unknown_file_is_404(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    fixtures_dir()
    status, chunks = await stream(session, upstream, "openai", "replay/openai/nope")
    assert status == 404
    assert "nope" in json.loads(b"".join(chunks))["error"]["message"]


# --- gen and echo in the three formats ---------------------------------------------------------


async def test_gen_openai_stream_with_usage(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    status, chunks = await stream(
        session, upstream, "openai", "gen/5", stream_options={"include_usage": True}
    )
    assert status == 200
    frames = [e.data for e in events(b"".join(chunks))]
    assert frames[-1] == "[DONE]"
    objs = [json.loads(f) for f in frames[:-1]]
    assert objs[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(o["choices"][0]["delta"].get("content") or "" for o in objs if o["choices"])
    assert text == "tok0 tok1 tok2 tok3 tok4 "
    assert objs[-2]["choices"][0]["finish_reason"] == "stop"
    assert objs[-1]["choices"] == []
    assert objs[-1]["usage"] == {"prompt_tokens": 6, "completion_tokens": 5, "total_tokens": 11}
    assert len(chunks) == len(frames)  # one event per HTTP chunk


async def test_gen_openai_without_include_usage_has_no_usage(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    _, chunks = await stream(session, upstream, "openai", "gen/2")
    objs = [json.loads(e.data) for e in events(b"".join(chunks))[:-1]]
    assert all("usage" not in o for o in objs)
    assert len(objs) == 4  # role, 2 text, finish


async def test_gen_anthropic_stream(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    _, chunks = await stream(session, upstream, "anthropic", "gen/4")
    evs = events(b"".join(chunks))
    names = [e.event for e in evs]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    objs = [json.loads(e.data) for e in evs]
    assert all(o["type"] == e.event for o, e in zip(objs, evs, strict=True))
    text = "".join(o["delta"]["text"] for o in objs if o["type"] == "content_block_delta")
    assert text == "tok0 tok1 tok2 tok3 "
    assert objs[0]["message"]["usage"]["input_tokens"] == 6
    assert objs[-2]["usage"] == {"output_tokens": 4}
    assert objs[-2]["delta"]["stop_reason"] == "end_turn"


async def test_gen_gemini_stream(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    _, chunks = await stream(session, upstream, "gemini", "gen/3")
    assert all(c.endswith(b"\r\n\r\n") for c in chunks)  # CRLF, as Gemini sends
    objs = [json.loads(e.data) for e in events(b"".join(chunks))]
    text = "".join(p["text"] for o in objs for p in o["candidates"][0]["content"]["parts"])
    assert text == "tok0 tok1 tok2 "
    assert [o["candidates"][0].get("finishReason") for o in objs] == [None, None, "STOP"]
    assert objs[-1]["usageMetadata"] == {
        "promptTokenCount": 6,
        "candidatesTokenCount": 3,
        "totalTokenCount": 9,
    }


async def test_gemini_model_in_path_with_options_raw_or_quoted(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    for path in (
        "/v1beta/models/gen/2?no_done=1:streamGenerateContent?alt=sse",
        f"/v1beta/models/{quote('gen/2?no_done=1', safe='')}:streamGenerateContent?alt=sse",
    ):
        async with session.post(upstream.base_url + path, json=GEMINI_BODY) as response:
            objs = [json.loads(e.data) for e in events(await response.read())]
        assert len(objs) == 2
        assert "finishReason" not in objs[-1]["candidates"][0]
    assert [r.model for r in upstream.log] == ["gen/2?no_done=1"] * 2
    assert upstream.log[0].query == "alt=sse"


@pytest.mark.parametrize("proto", ["openai", "anthropic", "gemini"])
async def test_echo_streams_last_user_message(
    proto: str, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    _, chunks = await stream(session, upstream, proto, "echo")
    objs = [json.loads(e.data) for e in events(b"".join(chunks)) if e.data != "[DONE]"]
    if proto == "openai":
        pieces = [o["choices"][0]["delta"].get("content") for o in objs[1:-1]]
    elif proto == "anthropic":
        pieces = [o["delta"]["text"] for o in objs if o["type"] == "content_block_delta"]
    else:
        pieces = [o["candidates"][0]["content"]["parts"][0]["text"] for o in objs]
    assert pieces == ["what ", "is ", "the ", "capital ", "of ", "France"]


@pytest.mark.parametrize("model", ["gen/3", "echo"])
@pytest.mark.parametrize("proto", ["openai", "anthropic", "gemini"])
async def test_non_streaming_bodies(
    proto: str, model: str, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    path, body = route(proto, model, stream=False)
    body.pop("stream", None)
    async with session.post(upstream.base_url + path, json=body) as response:
        assert response.status == 200
        assert response.headers["content-type"] == "application/json"
        data = await response.json()
    expected = "tok0 tok1 tok2 " if model == "gen/3" else "what is the capital of France"
    output = 3 if model == "gen/3" else 6
    if proto == "openai":
        assert data["object"] == "chat.completion"
        assert data["choices"][0]["message"] == {
            "role": "assistant",
            "content": expected,
            "refusal": None,
        }
        assert data["usage"]["completion_tokens"] == output
    elif proto == "anthropic":
        assert data["type"] == "message"
        assert data["content"] == [{"type": "text", "text": expected}]
        assert data["usage"] == {"input_tokens": 6, "output_tokens": output}
    else:
        assert data["candidates"][0]["content"]["parts"][0]["text"] == expected
        assert data["usageMetadata"]["candidatesTokenCount"] == output


async def test_models_list(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    async with session.get(upstream.base_url + "/v1/models") as response:
        ids = [m["id"] for m in (await response.json())["data"]]
    assert "echo" in ids and "gen/200" in ids


async def test_official_sdks_parse_the_fake_streams(upstream: FakeUpstream) -> None:
    openai = pytest.importorskip("openai")
    anthropic = pytest.importorskip("anthropic")
    oc = openai.AsyncOpenAI(base_url=upstream.base_url + "/v1", api_key="sk-o", max_retries=0)
    chunks = await oc.chat.completions.create(
        model="gen/4", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    text, usage = "", None
    async for chunk in chunks:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        usage = chunk.usage or usage
    assert text == "tok0 tok1 tok2 tok3 " and usage is not None and usage.completion_tokens == 4
    await oc.close()
    ac = anthropic.AsyncAnthropic(base_url=upstream.base_url, api_key="sk-a", max_retries=0)
    async with ac.messages.stream(model="gen/3", max_tokens=10, messages=USER) as st:
        message = await st.get_final_message()
    assert message.content[0].text == "tok0 tok1 tok2 " and message.usage.output_tokens == 3
    await ac.close()
    assert upstream.log[0].headers["authorization"] == "Bearer sk-o"
    # anthropic>=2 sends the key as "authorization: Bearer", older versions as x-api-key
    sent = upstream.log[1].headers
    assert "sk-a" in (sent.get("x-api-key"), sent.get("authorization", "").removeprefix("Bearer "))


# --- faults -------------------------------------------------------------------------------------


async def test_drop_after_cuts_the_chunked_body(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    path, body = route("openai", "gen/10?drop_after=3")
    received = b""
    async with session.post(upstream.base_url + path, json=body) as response:
        with pytest.raises(aiohttp.ClientPayloadError):
            async for data in response.content.iter_any():
                received += data
    assert len(events(received)) == 3
    record = upstream.log[-1]
    assert (record.events_sent, record.complete, record.client_closed) == (3, False, False)


async def test_stall_after_sends_nothing_more_and_logs_the_client_leaving(
    upstream: FakeUpstream,
) -> None:
    reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
    body = json.dumps({"model": "gen/10?stall_after=2", "messages": USER, "stream": True})
    writer.write(
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-test\r\n"
        f"content-length: {len(body)}\r\n\r\n{body}".encode()
    )
    received = b""
    while len(events(received.partition(b"\r\n\r\n")[2].replace(b"\r\n", b"\n"))) < 2:
        received += await asyncio.wait_for(reader.read(65536), 2)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(reader.read(65536), 0.3)
    record = upstream.log[-1]
    assert record.ended is None and record.events_sent == 2
    closed = time.time()
    writer.close()
    await writer.wait_closed()
    deadline = time.monotonic() + 1
    while record.ended is None and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert record.client_closed and not record.complete
    assert record.ended is not None and record.ended - closed < 1.0
    assert record.headers["authorization"] == "Bearer sk-test"


async def test_client_closing_mid_stream_stops_the_stream(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    path, body = route("anthropic", "gen/100?gap=0.02")
    async with session.post(upstream.base_url + path, json=body) as response:
        await response.content.readline()
        closed = time.time()
        response.close()
    await asyncio.sleep(0.3)
    record = upstream.log[-1]
    assert record.client_closed and not record.complete
    assert record.ended is not None and record.ended - closed < 1.0
    sent = record.events_sent
    assert sent < 20
    await asyncio.sleep(0.1)
    assert record.events_sent == sent


@pytest.mark.parametrize("proto", ["openai", "anthropic", "gemini"])
async def test_status_with_retry_after_and_protocol_shaped_body(
    proto: str, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    path, body = route(proto, "gen/3?status=429&retry_after=2")
    async with session.post(upstream.base_url + path, json=body) as response:
        assert response.status == 429
        assert response.headers["retry-after"] == "2"
        data = await response.json()
    if proto == "openai":
        assert data["error"]["code"] == "rate_limit_exceeded"
    elif proto == "anthropic":
        assert data["error"]["type"] == "rate_limit_error"
    else:
        assert data["error"]["status"] == "RESOURCE_EXHAUSTED"


async def test_status_with_custom_body(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    custom = json.dumps({"error": {"message": "quota", "type": "insufficient_quota"}})
    path, body = route("openai", f"gen/3?status=403&body={quote(custom)}")
    async with session.post(upstream.base_url + path, json=body) as response:
        assert response.status == 403
        assert "retry-after" not in response.headers
        assert await response.text() == custom


@pytest.mark.parametrize("proto", ["openai", "anthropic", "gemini"])
async def test_malformed_at(
    proto: str, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    _, chunks = await stream(session, upstream, proto, "gen/5?malformed_at=2")
    datas = [e.data for e in events(b"".join(chunks))]
    assert datas[2] == '{"broken'
    for i, data in enumerate(datas):
        if i != 2 and data != "[DONE]":
            json.loads(data)


async def test_bad_utf8_at(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    _, chunks = await stream(session, upstream, "openai", "gen/5?bad_utf8_at=3")
    assert b"\xff" in chunks[3]
    with pytest.raises(UnicodeDecodeError):
        chunks[3].decode()
    for i, chunk in enumerate(chunks):
        if i != 3:
            chunk.decode()
    obj = json.loads(chunks[3].decode(errors="replace").split("data: ", 1)[1])
    assert obj["choices"][0]["delta"]["content"].endswith("tok2 ")


async def test_bad_utf8_and_malformed_in_replay(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    fixtures_dir()
    model = "replay/anthropic/messages_text?bad_utf8_at=3&malformed_at=4"
    _, chunks = await stream(session, upstream, "anthropic", model)
    original = split_events((FIXTURES / "anthropic" / "messages_text.sse").read_bytes())
    assert len(chunks) == len(original)
    assert b"\xff" in chunks[3] and b'"text":"\xff' in chunks[3]
    assert events(chunks[4])[0].data == '{"broken'
    assert events(chunks[4])[0].event == events(original[4])[0].event
    assert [c for i, c in enumerate(chunks) if i not in (3, 4)] == [
        c for i, c in enumerate(original) if i not in (3, 4)
    ]


@pytest.mark.parametrize(
    ("proto", "model", "check"),
    [
        ("openai", "gen/2?no_done=1", lambda evs: evs[-1].data != "[DONE]"),
        ("anthropic", "gen/2?no_done=1", lambda evs: evs[-1].event == "message_delta"),
        ("gemini", "gen/2?no_done=1", lambda evs: "finishReason" not in evs[-1].data),
    ],
)
async def test_no_done(
    proto: str,
    model: str,
    check: Any,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
) -> None:
    status, chunks = await stream(session, upstream, proto, model)
    assert status == 200  # ended cleanly (the chunked terminator arrived)
    assert check(events(b"".join(chunks)))


async def test_no_done_replay_leaves_out_the_last_event(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    fixtures_dir()
    _, chunks = await stream(
        session, upstream, "openai", "replay/openai/chat_text_include_usage?no_done=1"
    )
    original = split_events((FIXTURES / "openai" / "chat_text_include_usage.sse").read_bytes())
    assert chunks == original[:-1]


async def test_error_after_sends_an_inband_error(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    _, chunks = await stream(session, upstream, "anthropic", "gen/5?error_after=4")
    evs = events(b"".join(chunks))
    assert len(evs) == 5
    assert evs[-1].event == "error"
    assert json.loads(evs[-1].data)["error"]["type"] == "overloaded_error"


async def test_fail_times_then_success_and_reset(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    path, body = route("openai", "gen/2?fail_times=2&status=503", stream=False)
    statuses = []
    for _ in range(4):
        async with session.post(upstream.base_url + path, json=body) as response:
            statuses.append(response.status)
            await response.read()
    assert statuses == [503, 503, 200, 200]
    async with session.delete(upstream.base_url + "/_fake/log") as response:
        assert response.status == 200
    assert upstream.log == [] and upstream.attempts == {}
    async with session.post(upstream.base_url + path, json=body) as response:
        assert response.status == 503


async def test_head_goes_out_before_the_first_event(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    # No clock upper bound (a loaded CI machine can stall any step): the first event is
    # a minute away, so the head arriving at all shows it does not wait for it.
    path, body = route("openai", "gen/3?ttft=60")
    async with session.post(upstream.base_url + path, json=body) as response:
        assert response.status == 200
        assert upstream.log[-1].events_sent == 0 and not response.content.is_eof()


async def test_ttft_and_gap(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    path, body = route("openai", "gen/3?ttft=0.2&gap=0.05")
    started = time.monotonic()
    async with session.post(upstream.base_url + path, json=body) as response:
        assert response.status == 200
        await response.content.readline()
        first_at = time.monotonic() - started
        await response.read()
        done_at = time.monotonic() - started
    assert first_at >= 0.19  # the first event waits ttft
    assert done_at >= 0.19 + 3 * 0.05  # and each next one waits gap


# --- log, HTTP behaviour, robustness -------------------------------------------------------------


async def test_log_over_http_records_headers_and_body(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    path, body = route("gemini", "gen/1")
    headers = {"x-goog-api-key": "g-key"}
    async with session.post(upstream.base_url + path, json=body, headers=headers) as response:
        await response.read()
    async with session.get(upstream.base_url + "/_fake/log") as response:
        log = await response.json()
    assert len(log) == 1
    entry = log[0]
    assert entry["headers"]["x-goog-api-key"] == "g-key"
    assert entry["body"] == GEMINI_BODY
    assert entry["model"] == "gen/1" and entry["complete"] and entry["events_sent"] == 1
    assert entry["path"] == "/v1beta/models/gen/1:streamGenerateContent"
    assert entry["ended"] >= entry["started"]


async def test_keep_alive_and_pipelining(upstream: FakeUpstream) -> None:
    reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
    body = json.dumps({"model": "gen/2", "messages": USER, "stream": True}).encode()
    request = b"POST /chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%b" % (
        len(body),
        body,
    )
    writer.write(request * 3)
    received = b""
    while received.count(b"\r\n0\r\n\r\n") < 3:
        received += await asyncio.wait_for(reader.read(65536), 2)
    assert received.count(b"HTTP/1.1 200 OK") == 3
    writer.close()
    await writer.wait_closed()


async def test_flow_control_with_a_slow_reader(upstream: FakeUpstream) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (upstream.host, upstream.port))
    body = json.dumps({"model": "gen/40000", "messages": USER, "stream": True}).encode()
    await loop.sock_sendall(
        sock,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%b"
        % (len(body), body),
    )
    await asyncio.sleep(0.2)  # let the server fill the socket and pause
    assert upstream.log[-1].events_sent < 40000
    received = bytearray()
    while not received.endswith(b"\r\n0\r\n\r\n"):
        received += await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 5)
    sock.close()
    assert received.count(b"data: ") == 40000 + 3


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 5\r\n\r\n{bad}", 400),
        (b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 2\r\n\r\n[]", 400),
        (b'POST /v1/messages HTTP/1.1\r\ncontent-length: 11\r\n\r\n{"model":1}', 400),
        (b'POST /v1/messages HTTP/1.1\r\ncontent-length: 15\r\n\r\n{"model":"x/y"}', 404),
        (b"GET /v1/chat/completions HTTP/1.1\r\n\r\n", 405),
        (b"GET /nowhere HTTP/1.1\r\n\r\n", 404),
    ],
)
async def test_bad_requests_get_json_errors(
    request_bytes: bytes, status: int, upstream: FakeUpstream
) -> None:
    reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
    writer.write(request_bytes)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert head.startswith(b"HTTP/1.1 %d " % status)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    assert isinstance(json.loads(await reader.readexactly(length)), dict)
    writer.close()
    # the server still serves
    _, w2 = await asyncio.open_connection(upstream.host, upstream.port)
    w2.close()


async def test_bad_options_are_400(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    for model in ("gen/2?colour=red", "gen/2?ttft=abc", "gen/x", "gen/2?malformed_at=99"):
        status, chunks = await stream(session, upstream, "openai", model)
        assert status == 400, model
        assert "error" in json.loads(b"".join(chunks))


@pytest.mark.parametrize(
    "body",
    [
        {"model": "echo", "messages": 5, "stream": True},
        {"model": "echo", "messages": [1, None, {"role": "user", "content": {"x": 1}}]},
        {"model": "echo", "messages": [{"role": "user", "content": [None, {"text": 3}]}]},
        {"model": "gen/2", "stream": "yes", "stream_options": []},
        {"model": "echo", "system": [{"type": "text", "text": "sys"}], "messages": []},
    ],
)
async def test_odd_bodies_never_give_500(
    body: dict[str, Any], upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    for path in ("/v1/chat/completions", "/v1/messages", "/v1beta/models/echo:generateContent"):
        async with session.post(upstream.base_url + path, json=body) as response:
            assert response.status < 500
            await response.read()
    odd = {"contents": {"parts": 1}, "systemInstruction": "x"}
    async with session.post(
        upstream.base_url + "/v1beta/models/echo:streamGenerateContent?alt=sse", json=odd
    ) as response:
        assert response.status == 200
        await response.read()


def test_cli_runs_as_a_process() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tokenrelay.fake", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base = process.stdout.readline().split()[-1]
        import urllib.request

        with urllib.request.urlopen(base + "/_fake/health", timeout=5) as response:
            assert json.loads(response.read()) == {"ok": True}
    finally:
        process.terminate()
        assert process.wait(5) == 0


# --- generated scenarios: tools, think, limit (tokenrelay.fake.scenes) ----------------------

CALLS = 'Let me look.\n/call get_weather {"city": "Paris"}\n/call get_time {"tz": "UTC"}'
TOOL_NAMES = ["get_weather", "get_time"]


def scene_body(
    proto: str, text: str, *, tools: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    """A request saying ``text`` and offering ``tools`` in the wire format of ``proto``."""
    names = TOOL_NAMES if tools is None else tools
    schema = {"type": "object", "properties": {}}
    if proto == "gemini":
        body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        if names:
            body["tools"] = [{"functionDeclarations": [{"name": n} for n in names]}]
    else:
        body = {"messages": [{"role": "user", "content": text}], "stream": True}
        if names and proto == "anthropic":
            body["tools"] = [{"name": n, "input_schema": schema} for n in names]
        elif names:
            body["tools"] = [
                {"type": "function", "function": {"name": n, "parameters": schema}} for n in names
            ]
        if proto == "anthropic":
            body["max_tokens"] = 100
    body.update(extra)
    return body


async def scene(
    session: aiohttp.ClientSession,
    up: FakeUpstream,
    proto: str,
    model: str,
    body: dict[str, Any],
    *,
    streamed: bool = True,
) -> tuple[int, list[Any]]:
    """(status, decoded events: JSON objects, ``[DONE]`` left out, or the error body)."""
    path, _ = route(proto, model, stream=streamed)
    if proto != "gemini":
        body = {**body, "model": model, "stream": streamed}
    async with session.post(up.base_url + path, json=body) as response:
        raw = await response.read()
        if response.status != 200 or not streamed:
            return response.status, [json.loads(raw)]
    evs = [e for e in events(raw) if e.data != "[DONE]"]
    if proto == "anthropic":
        assert all(json.loads(e.data)["type"] == e.event for e in evs)
    return 200, [json.loads(e.data) for e in evs]


async def test_tools_openai_streams_parallel_calls(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    body = scene_body("openai", CALLS, stream_options={"include_usage": True})
    status, objs = await scene(session, upstream, "openai", "tools", body)
    assert status == 200
    deltas = [o["choices"][0]["delta"] for o in objs if o["choices"]]
    assert deltas[0]["role"] == "assistant"
    assert "".join(d.get("content") or "" for d in deltas) == "Let me look."
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        for call in delta.get("tool_calls") or []:
            slot = calls.setdefault(call["index"], {"id": "", "name": "", "args": ""})
            slot["id"] += call.get("id") or ""
            slot["name"] += call.get("function", {}).get("name") or ""
            slot["args"] += call["function"].get("arguments") or ""
    assert [(c["name"], json.loads(c["args"])) for c in calls.values()] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "UTC"}),
    ]
    assert [c["id"].rsplit("_", 1)[1] for c in calls.values()] == ["0", "1"]
    indices = [d["tool_calls"][0]["index"] for d in deltas if d.get("tool_calls")]
    assert indices == sorted(indices), "one call after the other"
    assert [o["choices"][0]["finish_reason"] for o in objs if o["choices"]][-1] == "tool_calls"
    usage = objs[-1]["usage"]
    # one token per word of the prompt; one per text chunk and per arguments fragment
    assert usage["prompt_tokens"] == 11
    assert usage["completion_tokens"] == 3 + 3 + 2  # "Let me look." + 17 + 13 chars of args


async def test_tools_interleave_on_the_openai_wire(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    body = scene_body("openai", CALLS)
    _, objs = await scene(session, upstream, "openai", "tools?interleave=1", body)
    indices = [
        o["choices"][0]["delta"]["tool_calls"][0]["index"]
        for o in objs
        if o["choices"][0]["delta"].get("tool_calls")
    ]
    assert indices[:4] == [0, 1, 0, 1]
    args = ["", ""]
    for o in objs:
        for call in o["choices"][0]["delta"].get("tool_calls") or []:
            args[call["index"]] += call["function"].get("arguments") or ""
    assert [json.loads(a) for a in args] == [{"city": "Paris"}, {"tz": "UTC"}]


async def test_tools_anthropic_streams_tool_use_blocks(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    _, objs = await scene(session, upstream, "anthropic", "tools", scene_body("anthropic", CALLS))
    starts = [o["content_block"] for o in objs if o["type"] == "content_block_start"]
    assert [b["type"] for b in starts] == ["text", "tool_use", "tool_use"]
    assert [b.get("name") for b in starts[1:]] == TOOL_NAMES
    assert all(b["id"].startswith("toolu_msg_fake") for b in starts[1:])
    partial: dict[int, str] = {}
    for o in objs:
        if o["type"] == "content_block_delta" and o["delta"]["type"] == "input_json_delta":
            partial[o["index"]] = partial.get(o["index"], "") + o["delta"]["partial_json"]
    assert [json.loads(p) for p in partial.values()] == [{"city": "Paris"}, {"tz": "UTC"}]
    assert objs[-2]["delta"]["stop_reason"] == "tool_use"
    assert objs[-1]["type"] == "message_stop"


async def test_tools_gemini_streams_function_calls_the_first_signed(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    from tokenrelay.fake.scenes import signature

    _, objs = await scene(session, upstream, "gemini", "tools", scene_body("gemini", CALLS))
    parts = [p for o in objs for p in o["candidates"][0]["content"]["parts"]]
    assert "".join(p.get("text", "") for p in parts) == "Let me look."
    calls = [p for p in parts if "functionCall" in p]
    assert [c["functionCall"] for c in calls] == [
        {"name": "get_weather", "args": {"city": "Paris"}},
        {"name": "get_time", "args": {"tz": "UTC"}},
    ]
    assert calls[0]["thoughtSignature"] == signature('get_weather {"city": "Paris"}')
    assert "thoughtSignature" not in calls[1]
    assert objs[-1]["candidates"][0]["finishReason"] == "STOP"
    assert objs[-1]["usageMetadata"]["candidatesTokenCount"] == 3 + 3 + 2


@pytest.mark.parametrize("proto", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize(
    ("text", "tools", "word"),
    [
        ('/call get_stock {"s": 1}', None, "does not offer"),
        ("/call get_weather {", None, "not JSON"),
        ("/call get_weather [1]", None, "JSON object"),
        ("no call here", None, "no '/call"),
        ('/call get_weather {"city": "Paris"}', [], "does not offer"),
    ],
)
async def test_tools_refuses_what_it_cannot_serve(
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    proto: str,
    text: str,
    tools: list[str] | None,
    word: str,
) -> None:
    status, [body] = await scene(
        session, upstream, proto, "tools", scene_body(proto, text, tools=tools)
    )
    assert status == 400
    assert word in json.dumps(body)


@pytest.mark.parametrize("proto", ["openai", "anthropic", "gemini"])
async def test_think_streams_signed_reasoning_then_the_echo(
    upstream: FakeUpstream, session: aiohttp.ClientSession, proto: str
) -> None:
    from tokenrelay.fake.scenes import signature

    thought = "Reasoning about: what is the capital"
    body = scene_body(
        proto, "what is the capital", tools=[], stream_options={"include_usage": True}
    )
    if proto != "openai":
        body.pop("stream_options")
    _, objs = await scene(session, upstream, proto, "think", body)
    if proto == "openai":
        deltas = [o["choices"][0]["delta"] for o in objs if o["choices"]]
        reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
        text = "".join(d.get("content") or "" for d in deltas)
        signatures: list[str] = []
        usage = objs[-1]["usage"]
        assert usage["completion_tokens_details"] == {"reasoning_tokens": 6}
        assert usage["completion_tokens"] == 6 + 4
    elif proto == "anthropic":
        starts = [o["content_block"]["type"] for o in objs if o["type"] == "content_block_start"]
        assert starts == ["thinking", "text"]
        deltas = [o["delta"] for o in objs if o["type"] == "content_block_delta"]
        reasoning = "".join(d.get("thinking", "") for d in deltas)
        text = "".join(d.get("text", "") for d in deltas)
        signatures = [d["signature"] for d in deltas if d["type"] == "signature_delta"]
        kinds = [d["type"] for d in deltas]
        assert kinds.index("signature_delta") == kinds.index("text_delta") - 1
        assert objs[-2]["usage"] == {"output_tokens": 6 + 4}
    else:
        parts = [p for o in objs for p in o["candidates"][0]["content"]["parts"]]
        reasoning = "".join(p["text"] for p in parts if p.get("thought"))
        text = "".join(p["text"] for p in parts if not p.get("thought"))
        signatures = [p["thoughtSignature"] for p in parts if "thoughtSignature" in p]
        first_answer = next(p for p in parts if not p.get("thought"))
        assert first_answer.get("thoughtSignature") == signature(thought)
        meta = objs[-1]["usageMetadata"]
        assert (meta["candidatesTokenCount"], meta["thoughtsTokenCount"]) == (4, 6)
    assert reasoning == thought
    assert text == "what is the capital"
    assert signatures == ([] if proto == "openai" else [signature(thought)])


@pytest.mark.parametrize("proto", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("streamed", [True, False])
async def test_limit_honours_the_max_tokens_of_each_wire(
    upstream: FakeUpstream, session: aiohttp.ClientSession, proto: str, streamed: bool
) -> None:
    limit = {"openai": {"max_tokens": 2}, "anthropic": {"max_tokens": 2}}.get(
        proto, {"generationConfig": {"maxOutputTokens": 2}}
    )
    body = scene_body(proto, "one two three four", tools=[], **limit)
    _, objs = await scene(session, upstream, proto, "echo?limit=1", body, streamed=streamed)
    if proto == "openai":
        if streamed:
            text = "".join(o["choices"][0]["delta"].get("content") or "" for o in objs)
            finish = objs[-1]["choices"][0]["finish_reason"]
        else:
            text = objs[0]["choices"][0]["message"]["content"]
            finish = objs[0]["choices"][0]["finish_reason"]
        assert finish == "length"
    elif proto == "anthropic":
        if streamed:
            text = "".join(
                o["delta"].get("text", "") for o in objs if o["type"] == "content_block_delta"
            )
            stop = objs[-2]["delta"]["stop_reason"]
        else:
            text, stop = objs[0]["content"][0]["text"], objs[0]["stop_reason"]
        assert stop == "max_tokens"
    else:
        text = "".join(p["text"] for o in objs for p in o["candidates"][0]["content"]["parts"])
        assert objs[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert text == "one two "
    # without limit=1, or within the limit, nothing changes
    body = scene_body(proto, "one two", tools=[], **limit)
    _, objs = await scene(session, upstream, proto, "echo?limit=1", body, streamed=streamed)
    assert "length" not in json.dumps(objs) and "MAX_TOKENS" not in json.dumps(objs)
    body = scene_body(proto, "one two three four", tools=[], **limit)
    _, objs = await scene(session, upstream, proto, "echo", body, streamed=streamed)
    assert "four" in json.dumps(objs)
    assert "length" not in json.dumps(objs) and "MAX_TOKENS" not in json.dumps(objs)


@pytest.mark.parametrize("model", ["tools", "think"])
async def test_scenes_only_stream(
    upstream: FakeUpstream, session: aiohttp.ClientSession, model: str
) -> None:
    status, [body] = await scene(
        session, upstream, "openai", model, scene_body("openai", CALLS), streamed=False
    )
    assert status == 400 and "only stream" in body["error"]["message"]


async def test_faults_apply_to_the_scenes(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    _, objs = await scene(
        session, upstream, "anthropic", "tools?error_after=4", scene_body("anthropic", CALLS)
    )
    assert len(objs) == 5 and objs[-1]["type"] == "error"
    _, objs = await scene(
        session, upstream, "gemini", "think?no_done=1", scene_body("gemini", "hi")
    )
    assert all("finishReason" not in o["candidates"][0] for o in objs)


async def test_official_sdks_parse_the_scenes(upstream: FakeUpstream) -> None:
    openai = pytest.importorskip("openai")
    anthropic = pytest.importorskip("anthropic")
    oc = openai.AsyncOpenAI(base_url=upstream.base_url + "/v1", api_key="sk-o", max_retries=0)
    body = scene_body("openai", CALLS)
    async with oc.chat.completions.stream(
        model="tools?interleave=1", messages=body["messages"], tools=body["tools"]
    ) as st:
        completion = await st.get_final_completion()
    calls = completion.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "UTC"}),
    ]
    await oc.close()
    ac = anthropic.AsyncAnthropic(base_url=upstream.base_url, api_key="sk-a", max_retries=0)
    body = scene_body("anthropic", CALLS)
    async with ac.messages.stream(
        model="tools", max_tokens=100, messages=body["messages"], tools=body["tools"]
    ) as st:
        message = await st.get_final_message()
    assert [(b.name, b.input) for b in message.content if b.type == "tool_use"] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "UTC"}),
    ]
    async with ac.messages.stream(model="think", max_tokens=100, messages=USER) as st:
        message = await st.get_final_message()
    assert message.content[0].type == "thinking" and message.content[0].signature
    assert message.content[1].type == "text"
    await ac.close()


@pytest.mark.parametrize("model", ["tools", "think", "echo?limit=1"])
@pytest.mark.parametrize("proto", ["openai", "anthropic", "gemini"])
async def test_scenes_survive_odd_bodies(
    upstream: FakeUpstream, session: aiohttp.ClientSession, model: str, proto: str
) -> None:
    odd: dict[str, Any] = {
        "messages": [1, {"role": "user", "content": 5}],
        "tools": [3, {"function": 2}, {"functionDeclarations": 1}],
        "max_tokens": "x",
        "generationConfig": [],
        "contents": [{"parts": "x"}, 2],
    }
    status, _ = await scene(session, upstream, proto, model, odd)
    assert status in (200, 400)


# --- what was sent (the other side of a usage comparison) ----------------------------------


@pytest.mark.parametrize("proto", ["openai", "anthropic", "gemini"])
async def test_the_log_says_what_a_stream_sent(
    upstream: FakeUpstream, session: aiohttp.ClientSession, proto: str
) -> None:
    usage = {"stream_options": {"include_usage": True}} if proto == "openai" else {}
    whole = "tok0 tok1 tok2 tok3 "
    await stream(session, upstream, proto, "gen/4", **usage)
    sent = upstream.log[-1].to_json()["sent"]
    assert sent["chars"] == len(whole)
    assert (sent["input"], sent["output"], sent["final"]) == (6, 4, True)  # 6 prompt words
    await stream(session, upstream, proto, "gen/4?no_usage=1", **usage)
    sent = upstream.log[-1].to_json()["sent"]
    assert (sent["input"], sent["output"], sent["chars"]) == (None, None, len(whole))
    # the first events only: Anthropic and Gemini have given the input count already
    first = {"openai": 2, "anthropic": 4, "gemini": 1}[proto]  # up to the first text
    path, body = route(proto, f"gen/4?drop_after={first}")
    body.update(usage)
    async with session.post(upstream.base_url + path, json=body) as response:
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    sent = upstream.log[-1].to_json()["sent"]
    assert sent["chars"] == len("tok0 ") and sent["events"] == first and not sent["final"]
    assert sent["input"] == (None if proto == "openai" else 6)


# --- counting tokens, and the context-length error ------------------------------------------


async def test_the_fake_counts_tokens_in_anthropic_and_gemini_shape(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    body = {
        "model": "echo",
        "system": "be brief",
        "messages": [{"role": "user", "content": "a b c"}],
    }
    async with session.post(upstream.base_url + "/v1/messages/count_tokens", json=body) as r:
        assert r.status == 200 and await r.json() == {"input_tokens": 5}
    gemini = {"contents": [{"role": "user", "parts": [{"text": "a b c"}]}]}
    wrapped = {"generateContentRequest": {"model": "models/echo", **gemini}}
    for sent in (gemini, wrapped):
        async with session.post(
            upstream.base_url + "/v1beta/models/echo:countTokens", json=sent
        ) as r:
            assert r.status == 200 and (await r.json())["totalTokens"] == 3
    paths = [e.path for e in upstream.log[-3:]]
    assert paths[0] == "/v1/messages/count_tokens" and paths[1].endswith(":countTokens")


@pytest.mark.parametrize(
    ("proto", "words"),
    [
        ("anthropic", "prompt is too long: 200001 tokens > 200000 maximum"),
        ("openai", "maximum context length is 200000 tokens"),
        ("gemini", "The input token count (200001) exceeds the maximum number of tokens"),
    ],
)
async def test_too_long_answers_each_providers_context_length_error(
    upstream: FakeUpstream, session: aiohttp.ClientSession, proto: str, words: str
) -> None:
    path, body = route(proto, "echo?too_long=1")
    async with session.post(upstream.base_url + path, json=body) as response:
        assert response.status == 400
        data = await response.json()
    assert words in json.dumps(data)
    if proto == "openai":
        assert data["error"]["code"] == "context_length_exceeded"
