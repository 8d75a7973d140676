"""The Python SDK (``tokenrelay.client``) against real gateway processes and the fake
upstream: both clients, both wires, retries, timeouts, resume after drops at random
points (a TCP proxy cuts the connection), cancel reaching the upstream, typed errors,
and a plain OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway

from tokenrelay.client import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    Finish,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    Retry,
    Start,
    TextDelta,
    Timeouts,
    Usage,
)

WORDS = " ".join(f"w{i}" for i in range(40))
FAST = Retry(backoff_base=0.01, backoff_max=0.05)
PROTOCOLS = ["openai", "anthropic"]
TOOLS = {
    "openai": [{"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}],
    "anthropic": [{"name": "get", "input_schema": {"type": "object"}}],
}


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def uniq(spec: str) -> str:
    """A fake model string no other request uses (the fake counts fail_times per string)."""
    return f"{spec}&ttft=0.0000{secrets.randbelow(10**9):09d}"


@pytest.fixture(scope="module")
def gw(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    """One attempt at the gateway (so retries are the SDK's), streams kept 5 s."""
    config = gateway_config(
        fake,
        retries={"max_attempts": 1},
        streams={"grace": 5, "retention": 60},
        local={"rate": 100},
        keepalive_interval=0.2,
    )
    gateway = start_gateway(workdir, config)
    yield gateway
    gateway.proc.stop()


class CutProxy:
    """A TCP proxy to ``port`` on its own thread. The n-th connection accepted is cut
    (both sides reset) after ``cuts[n]`` bytes from the server; later ones pass."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cuts: list[int] = []
        self.accepted = 0
        self.fired = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._conn, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
        ready.set()
        self.loop.run_forever()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cut = self.cuts[self.accepted] if self.accepted < len(self.cuts) else None
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, cut: Any) -> None:
            sent = 0
            while data := await src.read(65536):
                if cut is not None and sent + len(data) >= cut:
                    dst.write(data[: cut - sent])
                    await dst.drain()
                    self.fired += 1
                    writer.transport.abort()
                    up_writer.transport.abort()
                    return
                sent += len(data)
                dst.write(data)
                await dst.drain()
            dst.close()

        tasks = [pipe(reader, up_writer, None), pipe(up_reader, writer, cut)]
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture(scope="module")
def proxy(gw: Gateway) -> CutProxy:
    return CutProxy(gw.proc.port)


@pytest.fixture(scope="module")
def client(gw: Gateway) -> Iterator[Client]:
    """The sync client most tests share; calls pass their own protocol, retry, timeout."""
    with Client(gw.base_url, retry=FAST) as shared:
        yield shared


# --- streaming and non-streaming, both wires, both clients ---------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sync_stream_events_and_final_equal_create(client: Client, protocol: Any) -> None:
    kw: dict[str, Any] = {"model": "local/echo", "messages": user("hi 世界 again")}
    with client.chat.stream(protocol=protocol, **kw) as s:
        events = list(s)
        final = s.final()
    created = client.chat.create(protocol=protocol, **kw)
    assert isinstance(events[0], Start) and isinstance(events[-1], Usage)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "hi 世界 again"
    assert Finish("stop") in events and final.text == "hi 世界 again"
    assert final.finish_reason == "stop" and final.usage and final.usage.output == 3
    assert final == created and final.id != created.id
    assert s.stream_id and s.stream_id.startswith("st_") and s.request_id
    assert final.stream_id == s.stream_id and created.stream_id is None


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_async_stream_text_and_final_equal_create(gw: Gateway, protocol: Any) -> None:
    async with AsyncClient(gw.base_url, protocol=protocol) as aclient:
        async with aclient.chat.stream(model="local/echo", messages=user(WORDS)) as s:
            pieces = [piece async for piece in s.text()]
            final = await s.final()
        created = await aclient.chat.create(model="local/echo", messages=user(WORDS))
    assert len(pieces) == 40 and "".join(pieces) == WORDS
    assert final == created and final.text == WORDS


def test_sync_text_only(client: Client) -> None:
    pieces = list(client.chat.stream(model="local/echo", messages=user("a b c")).text())
    assert pieces == ["a ", "b ", "c"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tool_calls_streamed_and_created(client: Client, protocol: Any) -> None:
    kw: dict[str, Any] = {"model": "local/echo", "tools": TOOLS[protocol], "protocol": protocol}
    kw["messages"] = user('/call get {"city":"Paris","days":[1,2,3]}')
    final, created = client.chat.stream(**kw).final(), client.chat.create(**kw)
    for result in (final, created):
        (call,) = result.tool_calls
        assert call.name == "get" and call.id and result.finish_reason == "tool_calls"
        assert call.parsed_arguments() == {"city": "Paris", "days": [1, 2, 3]}
    assert final.tool_calls[0].arguments == created.tool_calls[0].arguments


def test_system_message_and_params_reach_the_anthropic_wire(client: Client) -> None:
    messages = [{"role": "system", "content": "be brief"}, *user("one two three")]
    result = client.chat.create(
        model="local/echo", messages=messages, max_tokens=2, protocol="anthropic"
    )
    assert result.text == "one two " and result.finish_reason == "length"
    assert result.usage is not None and result.usage.input == 5  # the system words count


def test_the_stop_sequence_that_ended_an_anthropic_answer(client: Client) -> None:
    kw: dict[str, Any] = {"model": "local/echo", "protocol": "anthropic"}
    kw |= {"messages": user("one two three four"), "stop_sequences": ["four", "three"]}
    for result in (client.chat.stream(**kw).final(), client.chat.create(**kw)):
        assert result.text == "one two " and result.finish_reason == "stop"
        assert result.stop_sequence == "three"
    plain = client.chat.create(model="local/echo", messages=user("one two"), protocol="anthropic")
    assert plain.stop_sequence is None


# --- retries before the first byte ----------------------------------------------------


def requests_for(fake: FakeUpstream, model: str) -> list[dict[str, Any]]:
    fake.find(model)
    return [e for e in fake.log() if (e.get("body") or {}).get("model") == model]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_500_is_retried(client: Client, fake: FakeUpstream, protocol: Any) -> None:
    model = uniq("gen/5?fail_times=1&status=500")
    assert client.chat.stream(model=f"fake/{model}", messages=user("x"), protocol=protocol).final()
    assert [e["status"] for e in requests_for(fake, model)] == [500, 200]


def test_a_429_waits_for_retry_after(client: Client, fake: FakeUpstream) -> None:
    model = uniq("gen/4?status=429&retry_after=1&fail_times=1")
    start = time.monotonic()
    result = client.chat.create(model=f"fake/{model}", messages=user("x"))
    assert result.text == "tok0 tok1 tok2 tok3 "
    assert time.monotonic() - start >= 0.95, "Retry-After: 1 was honoured"
    assert len(requests_for(fake, model)) == 2


def test_attempts_are_bounded_and_client_errors_not_retried(
    client: Client, fake: FakeUpstream
) -> None:
    failing, refused = uniq("gen/2?status=503"), uniq("gen/2?status=400&fail_times=1")
    retry = Retry(max_attempts=3, backoff_base=0.01)
    with pytest.raises(InternalServerError) as info:
        client.chat.create(model=f"fake/{failing}", messages=user("x"), retry=retry)
    assert info.value.status == 503 and (info.value.request_id or "").startswith("req_")
    with pytest.raises(BadRequestError):
        client.chat.create(model=f"fake/{refused}", messages=user("x"), retry=retry)
    assert len(requests_for(fake, failing)) == 3
    assert len(requests_for(fake, refused)) == 1


def test_connection_errors_are_retried() -> None:
    """A server that accepts and hangs up at once: every attempt is made, then
    APIConnectionError."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    retry = Retry(max_attempts=4, backoff_base=0.01)
    with Client(url, retry=retry) as plain, pytest.raises(APIConnectionError):
        plain.chat.stream(model="m", messages=user("x")).final()
    listener.close()
    assert len(accepted) == 4


# --- timeouts --------------------------------------------------------------------------


def test_first_token_timeout_ignores_keepalive_pings(gw: Gateway, fake: FakeUpstream) -> None:
    """The client's default (constructor) timeouts; the gateway pings every 0.2 s."""
    model = f"gen/3?ttft=3&gap=0.00{secrets.randbelow(10**6):06d}"
    start = time.monotonic()
    slow = Client(gw.base_url, timeouts=Timeouts(first_token=0.6))
    with slow, pytest.raises(APITimeoutError) as info:
        slow.chat.stream(model=f"fake/{model}", messages=user("x")).final()
    assert info.value.code == "first_token_timeout"
    # Had the pings reset the clock, the first token (at 3 s) would have come and the
    # call would have succeeded: the raise above shows they did not.
    assert time.monotonic() - start >= 0.6
    assert fake.find(model)["client_closed"], "the stream was cancelled on the gateway"


async def test_idle_and_total_timeouts_per_call(gw: Gateway) -> None:
    async with AsyncClient(gw.base_url) as aclient:
        stream = aclient.chat.stream(
            model="fake/gen/5?gap=1", messages=user("x"), timeout=Timeouts(idle=0.3)
        )
        with pytest.raises(APITimeoutError) as info:
            async for _ in stream:
                pass
        assert info.value.code == "idle_timeout"
        assert stream.current().text == "", "the role chunk came, then silence"
        with pytest.raises(APITimeoutError) as info:
            await aclient.chat.stream(
                model="fake/gen/100?gap=0.02", messages=user("x"), timeout=Timeouts(total=0.5)
            ).final()
        assert info.value.code == "total_timeout"


def test_connect_timeout(client: Client) -> None:
    """A listener whose accept queue is full: the handshake never completes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = [socket.socket() for _ in range(8)]
    for s in fillers:
        s.setblocking(False)
        s.connect_ex(listener.getsockname())
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    timeout, retry = Timeouts(connect=0.3), Retry(max_attempts=1)
    with Client(url) as plain, pytest.raises(APITimeoutError) as info:
        plain.chat.create(model="m", messages=user("x"), timeout=timeout, retry=retry)
    assert info.value.code == "connect_timeout"
    for s in [*fillers, listener]:
        s.close()


# --- resume after a drop -----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_resume_after_drops_at_random_points(client: Client, proxy: CutProxy, seed: int) -> None:
    """One to three cuts at seeded random byte offsets, each on a new connection: the
    caller sees the events of an uninterrupted stream, once each."""
    rng = random.Random(seed)
    kw: dict[str, Any] = {"model": "local/echo", "messages": user(WORDS)}
    kw["protocol"] = PROTOCOLS[seed % 2]
    whole = client.chat.stream(**kw)
    expected = [e for e in whole if not isinstance(e, Start)]
    cuts = [rng.randrange(400, 9000) for _ in range(rng.randint(1, 3))]
    proxy.cuts, proxy.accepted, proxy.fired = cuts, 0, 0
    with Client(proxy.url) as cut, cut.chat.stream(**kw) as s:
        events = [e for e in s if not isinstance(e, Start)]
        assert events == expected and s.final() == whole.final()
    assert s.resumes == proxy.fired >= 1


async def test_async_resume_and_bounded_reattachments(gw: Gateway, proxy: CutProxy) -> None:
    proxy.cuts, proxy.accepted = [700, 900], 0
    async with AsyncClient(proxy.url) as client:
        stream = client.chat.stream(model="local/echo", messages=user(WORDS))
        assert [p async for p in stream.text()] == [f"w{i} " for i in range(39)] + ["w39"]
        assert stream.resumes == 2
        proxy.cuts, proxy.accepted = [700, 300, 300, 300], 0
        stream = client.chat.stream(
            model="local/echo", messages=user(WORDS), retry=Retry(max_resumes=2)
        )
        with pytest.raises(APIConnectionError, match="re-attach"):
            await stream.final()
        assert stream.resumes == 2


async def test_frames_seen_before_a_drop_are_skipped() -> None:
    """A server that re-sends from an earlier frame on re-attach (through an injected
    transport: the gateway never does): no event is seen twice."""

    def frame(seq: int, text: str, finish: str | None = None) -> str:
        choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
        return f"id: st_x:{seq}\ndata: {json.dumps({'id': 'c', 'choices': [choice]})}\n\n"

    class Dropped(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield (frame(1, "a ") + frame(2, "b ") + frame(3, "c ")[:20]).encode()
            raise httpx.ReadError("cut")

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"x-stream-id": "st_x", "content-type": "text/event-stream"}
        if request.method == "POST":
            return httpx.Response(200, headers=headers, stream=Dropped())
        assert request.headers["last-event-id"] == "st_x:2"
        rest = frame(1, "a ") + frame(2, "b ") + frame(3, "c ") + frame(4, "", "stop")
        return httpx.Response(200, headers=headers, content=rest + "id: st_x:5\ndata: [DONE]\n\n")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = AsyncClient("http://test/v1", http_client=http)
        stream = client.chat.stream(model="m", messages=user("x"))
        assert [p async for p in stream.text()] == ["a ", "b ", "c "]
        assert stream.resumes == 1 and stream.current().finish_reason == "stop"


# --- stop: the gateway cancels, the upstream sees the close ----------------------------


def slow_model() -> str:
    return f"gen/400?gap=0.05&ttft=0.00{secrets.randbelow(10**6):06d}"


def assert_upstream_closed(fake: FakeUpstream, model: str, since: float) -> None:
    deadline = time.monotonic() + 2
    entry = fake.find(model)
    while not entry.get("ended") and time.monotonic() < deadline:
        time.sleep(0.05)
        entry = fake.find(model)
    assert entry["client_closed"] and entry["ended"] - since < 1.0, "grace is 5 s: cancel did it"


@pytest.mark.parametrize("how", ["with-exit", "close", "break"])
def test_sync_stop_cancels_the_upstream(client: Client, fake: FakeUpstream, how: str) -> None:
    model = slow_model()
    stream = client.chat.stream(model=f"fake/{model}", messages=user("x"))
    if how == "with-exit":
        with stream:
            next(stream), next(stream), next(stream)
    elif how == "close":
        next(stream), next(stream), stream.close()
    else:
        for i, _ in enumerate(stream):
            if i == 3:
                break
    assert_upstream_closed(fake, model, time.time())
    assert 0 < len(stream.current().text) < 40


@pytest.mark.parametrize("how", ["break", "task-cancel"])
async def test_async_stop_cancels_the_upstream(gw: Gateway, fake: FakeUpstream, how: str) -> None:
    model = slow_model()
    async with AsyncClient(gw.base_url) as aclient:
        stream = aclient.chat.stream(model=f"fake/{model}", messages=user("x"))
        if how == "break":
            async for event in stream:
                if isinstance(event, TextDelta):
                    break
        else:
            task = asyncio.create_task(stream.final())
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        stopped = time.time()
        await asyncio.sleep(0.2)  # the closed generator is finalized by the loop
        assert_upstream_closed(fake, model, stopped)


# --- typed errors ----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_model_is_not_found_with_request_id(client: Client, protocol: Any) -> None:
    with pytest.raises(NotFoundError) as info:
        client.chat.stream(model="nobody/none", messages=user("x"), protocol=protocol).final()
    error = info.value
    assert error.status == 404 and "nobody/none" in error.message
    assert error.request_id and error.request_id.startswith("req_")
    types = {"openai": "invalid_request_error", "anthropic": "not_found_error"}
    assert error.type == types[protocol]
    assert protocol == "anthropic" or error.code == "model_not_found"


@pytest.mark.parametrize(
    ("status", "cls"),
    [(401, AuthenticationError), (403, PermissionDeniedError), (429, RateLimitError)],
)
def test_upstream_refusals_are_typed(client: Client, status: int, cls: type[Exception]) -> None:
    model = f"fake/{uniq(f'gen/2?status={status}&retry_after=7')}"
    with pytest.raises(cls) as info:
        client.chat.create(model=model, messages=user("x"), retry=Retry(retry_after_max=1))
    assert isinstance(info.value, APIStatusError) and info.value.status == status
    assert info.value.request_id and not info.value.in_stream
    if status == 429:
        assert info.value.retry_after == 7, "a longer Retry-After than allowed is not waited"


def test_invalid_parameter_names_it(client: Client) -> None:
    with pytest.raises(BadRequestError) as info:
        client.chat.create(model="local/echo", messages=user("x"), temperature=9)
    assert info.value.param == "temperature" and info.value.type == "invalid_request_error"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_error_frame_after_the_start_is_raised_after_the_events(
    client: Client, protocol: Any
) -> None:
    model = "fake/gen/20?error_after=4"
    stream = client.chat.stream(model=model, messages=user("x"), protocol=protocol)
    seen: list[Any] = []
    with pytest.raises(APIStatusError) as info:
        for event in stream:
            seen.append(event)
    assert info.value.in_stream and info.value.request_id
    assert any(isinstance(e, TextDelta) for e in seen)
    assert stream.resumes == 0, "an error frame is an end, not a drop"


# --- a plain OpenAI-compatible server (the fake upstream itself) -----------------------


async def test_plain_server_streams_and_creates_without_resume(fake: FakeUpstream) -> None:
    async with AsyncClient(fake.base_url + "/v1") as aclient:
        stream = aclient.chat.stream(model="gen/5", messages=user("x"))
        final = await stream.final()
        created = await aclient.chat.create(model="gen/5", messages=user("x"))
        kw: dict[str, Any] = {"model": "gen/5", "messages": user("x"), "protocol": "anthropic"}
        anthropic = await aclient.chat.create(**kw)
    assert final.text == created.text == anthropic.text == "tok0 tok1 tok2 tok3 tok4 "
    assert final == created and stream.stream_id is None


def test_plain_server_drop_is_an_error_and_stop_sends_no_cancel(fake: FakeUpstream) -> None:
    with Client(fake.base_url + "/v1") as plain:
        with pytest.raises(APIConnectionError, match="cannot resume"):
            plain.chat.stream(model="gen/50?drop_after=5", messages=user("x")).final()
        model = slow_model()
        with plain.chat.stream(model=model, messages=user("x")) as stream:
            next(stream), next(stream)
    entry = fake.find(model)
    assert entry["client_closed"], "closing the connection is the only stop a plain server has"
    assert not [e for e in fake.log() if "/streams/" in e["path"]], "no cancel call was made"
