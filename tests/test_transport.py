"""tokenrelay's own HTTP/1.1 client (tokenrelay.providers.transport): parsing at any
split, keep-alive reuse, closing mid-stream, drops, stalls, timeouts, TLS, flow control,
against the real fake upstream and small servers written here."""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, cast

import pytest
from support.procs import FakeUpstream

from tokenrelay.events import ChatRequest, GatewayError, Message, TextPart
from tokenrelay.protocols.openai import codec as openai_module
from tokenrelay.providers.http import Endpoint, HTTPProvider
from tokenrelay.providers.transport import (
    HIGH_WATER,
    ConnectTimeout,
    Pool,
    Response,
    TransportError,
    _Conn,
    _parse,
)
from tokenrelay.sse import ServerSentEvent, SSEDecoder

TAG = secrets.randbelow(10**6)
JSON = {"Content-Type": "application/json"}


def m(spec: str) -> str:
    """A fake-upstream model string unique to this test session (for its log)."""
    return f"{spec}{'&' if '?' in spec else '?'}ttft=0.00{TAG:06d}"


def chat(model: str, stream: bool = True, text: str = "hi") -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
    return json.dumps(body).encode()


CODEC = cast(Any, openai_module)  # a codec is a module with the codec functions
REQUEST = ChatRequest(model="x", messages=[Message("user", [TextPart("hi")])], stream=True)


def url(fake: FakeUpstream) -> str:
    return f"{fake.base_url}/v1/chat/completions"


async def events(response: Response) -> list[ServerSentEvent]:
    response.decode_with(SSEDecoder().feed)
    out: list[ServerSentEvent] = []
    while (batch := await response.next()) is not None:
        out.extend(batch)
    return out


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    p = Pool(connect_timeout=5)
    yield p
    await p.aclose()


# --- parsing, without a network ----------------------------------------------------------


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closing = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


SSE_BODY = (
    'data: {"a":"h\u00e9llo \u4e16\u754c"}\r\n\r\n'
    ": keep-alive\n\n"
    "event: delta\ndata: line one\ndata: line two\n\n"
    "id: 7\ndata: [DONE]\n\n"
).encode()


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, i = b"", 0
    for size in sizes:
        part = body[i : i + size]
        i += size
        if part:
            out += b"%x;ext=1\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n\r\n"


RAW = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
    b"X-Long-Header: " + b"v" * 300 + b"\r\n\r\n" + chunked(SSE_BODY, [5, 1, 30, 2, 200])
)


async def parse_in_pieces(pieces: list[bytes]) -> tuple[Response, list[ServerSentEvent]]:
    loop = asyncio.get_running_loop()
    conn = _Conn(Pool(), ("http", "x", 80), loop)
    conn.connection_made(_Transport())
    head = loop.create_future()
    response = conn.response = Response(conn, head, False)
    got: list[ServerSentEvent] = []
    for piece in pieces:
        conn.data_received(piece)
        if head.done() and response._feed is None:
            response.decode_with(SSEDecoder().feed)
        if response._ready:
            got.extend(await response.next() or [])
    assert await response.next() is None
    return response, got


async def test_a_chunked_stream_parses_the_same_however_it_is_split() -> None:
    expected = list(SSEDecoder().iter([SSE_BODY]))
    assert [e.data for e in expected][-1] == "[DONE]" and len(expected) == 3
    splits = [[RAW], [RAW[i : i + 1] for i in range(len(RAW))]]
    splits += [[RAW[:i], RAW[i:]] for i in range(1, len(RAW))]
    rng = random.Random(7)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(RAW)), 4))
        splits.append([RAW[a:b] for a, b in zip([0, *cuts], [*cuts, len(RAW)], strict=True)])
    for pieces in splits:
        response, got = await parse_in_pieces(pieces)
        assert got == expected, [len(p) for p in pieces]
        assert response.status == 200
        assert response.header("x-long-header") == "v" * 300
        assert response._complete and response._reusable


async def test_raw_bytes_come_one_piece_per_read() -> None:
    loop = asyncio.get_running_loop()
    conn = _Conn(Pool(), ("http", "x", 80), loop)
    conn.connection_made(_Transport())
    response = conn.response = Response(conn, loop.create_future(), False)
    body_at = RAW.index(b"\r\n\r\n") + 4
    conn.data_received(RAW[:body_at])
    assert response.status == 200 and not response._ready
    framed = chunked(SSE_BODY, [5, 1, 30, 2, 200])
    two_chunks = framed.index(b"\r\n1e;")  # the 5-byte and the 1-byte chunk, then a cut
    conn.data_received(RAW[body_at : body_at + two_chunks + 2])
    assert await response.next() == [SSE_BODY[:6]]  # one bytes object per read
    conn.data_received(RAW[body_at + two_chunks + 2 :])
    assert await response.next() == [SSE_BODY[6:]]
    assert await response.next() is None


# --- against the fake upstream -----------------------------------------------------------


async def test_status_headers_and_a_stream(fake: FakeUpstream, pool: Pool) -> None:
    response = await pool.request("POST", url(fake), JSON, chat("gen/3"))
    assert response.status == 200
    assert response.header("Content-Type") == "text/event-stream"
    assert (response.header("X-Request-Id") or "").startswith("req_fake")
    got = await events(response)
    assert [e.data for e in got][-1] == "[DONE]"
    text = "".join(
        json.loads(e.data)["choices"][0]["delta"].get("content") or ""
        for e in got
        if e.data != "[DONE]"
    )
    assert text == "tok0 tok1 tok2 "
    response.close()


async def test_sent_request_head(fake: FakeUpstream, pool: Pool) -> None:
    model = m("gen/1")
    response = await pool.request("POST", url(fake), {**JSON, "X-Extra": "1"}, chat(model))
    await events(response)
    response.close()
    headers = fake.find(model)["headers"]
    assert headers["accept-encoding"] == "identity"
    assert headers["x-extra"] == "1"
    assert headers["host"] == fake.base_url.removeprefix("http://")
    assert headers["content-length"] == str(len(chat(model)))


async def test_keep_alive_reuses_the_connection(fake: FakeUpstream, pool: Pool) -> None:
    first = await pool.request("POST", url(fake), JSON, chat("gen/3"))
    address = first.local_address
    await events(first)
    first.close()
    assert pool.idle_count() == 1
    second = await pool.request("POST", url(fake), JSON, chat("gen/3", stream=False))
    assert second.reused and second.local_address == address
    assert json.loads(await second.read())["choices"][0]["message"]["content"]
    second.close()  # a Content-Length body read to its end: reusable too
    third = await pool.request("POST", url(fake), JSON, chat("gen/2"))
    assert third.reused and third.local_address == address
    third.close()


async def test_close_mid_stream_is_seen_by_the_upstream_at_once(
    fake: FakeUpstream, pool: Pool
) -> None:
    model = m("gen/100?gap=0.05")
    response = await pool.request("POST", url(fake), JSON, chat(model))
    response.decode_with(SSEDecoder().feed)
    assert await response.next()
    closed_at = time.time()
    response.close()
    response.close()  # idempotent
    assert pool.idle_count() == 0, "a connection is reused only after a whole response"
    deadline = time.monotonic() + 1
    while not (entry := fake.find(model))["client_closed"]:
        assert time.monotonic() < deadline, entry
        await asyncio.sleep(0.02)
    assert entry["ended"] - closed_at < 1.0
    assert 0 < entry["events_sent"] < 100
    with pytest.raises(TransportError):
        await response.next()
    again = await pool.request("POST", url(fake), JSON, chat("gen/1"))
    assert not again.reused
    again.close()


async def test_a_drop_mid_body_delivers_what_came_before(fake: FakeUpstream, pool: Pool) -> None:
    response = await pool.request("POST", url(fake), JSON, chat("gen/10?drop_after=3"))
    response.decode_with(SSEDecoder().feed)
    got: list[ServerSentEvent] = []
    with pytest.raises(TransportError, match="closed the connection mid-body"):
        while (batch := await response.next()) is not None:
            got.extend(batch)
    assert len(got) == 3
    response.close()
    assert pool.idle_count() == 0


async def test_a_drop_through_the_provider(fake: FakeUpstream) -> None:
    provider = HTTPProvider("fake", CODEC, Endpoint(f"{fake.base_url}/v1", "sk-secret-key"), ["*"])
    upstream = await provider.open(REQUEST, "gen/10?drop_after=3")
    got: list[ServerSentEvent] = []
    with pytest.raises(GatewayError, match="upstream fake failed while streaming"):
        async for frames in upstream.frames():
            got.extend(frames)
    assert len(got) == 3
    await upstream.aclose()
    await provider.aclose()


async def test_a_stall_waits_until_closed(fake: FakeUpstream, pool: Pool) -> None:
    model = m("gen/10?stall_after=2")
    response = await pool.request("POST", url(fake), JSON, chat(model))
    response.decode_with(SSEDecoder().feed)
    got: list[ServerSentEvent] = []
    while len(got) < 2:
        got.extend(await response.next() or [])
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(response.next(), 0.3)
    response.close()
    deadline = time.monotonic() + 1
    while not fake.find(model)["client_closed"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_cancelled_before_the_head_aborts(fake: FakeUpstream, pool: Pool) -> None:
    model = m("gen/3?stall_after=0")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await pool.request("POST", url(fake), JSON, chat(model, stream=False))
    deadline = time.monotonic() + 1
    while not fake.find(model)["client_closed"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert pool.idle_count() == 0


async def test_429_with_retry_after(fake: FakeUpstream, pool: Pool) -> None:
    response = await pool.request("POST", url(fake), JSON, chat("gen/3?status=429&retry_after=7"))
    assert response.status == 429
    assert response.header("retry-after") == "7"
    assert json.loads(await response.read(64 * 1024))["error"]["code"] == "rate_limit_exceeded"
    response.close()
    provider = HTTPProvider("fake", CODEC, Endpoint(f"{fake.base_url}/v1"), ["*"])
    with pytest.raises(GatewayError) as info:
        await provider.open(REQUEST, "gen/3?status=429&retry_after=7")
    assert info.value.status == 429 and info.value.headers["Retry-After"] == "7"
    await provider.aclose()


async def test_a_5_mib_line(fake: FakeUpstream, pool: Pool) -> None:
    word = "x" * (5 * 1024 * 1024)
    response = await pool.request("POST", url(fake), JSON, chat("echo", text=word))
    got = await events(response)
    contents = [
        json.loads(e.data)["choices"][0]["delta"].get("content") for e in got if e.data != "[DONE]"
    ]
    assert word in contents
    response.close()
    assert pool.idle_count() == 1


async def test_reading_pauses_while_the_consumer_is_behind(fake: FakeUpstream, pool: Pool) -> None:
    response = await pool.request("POST", url(fake), JSON, chat("gen/20000"))
    response.decode_with(SSEDecoder().feed)
    await asyncio.sleep(0.5)  # take nothing for a while
    conn = response._conn
    assert conn is not None and conn.reading_paused
    assert HIGH_WATER < response._buffered < 4 * HIGH_WATER
    got: list[ServerSentEvent] = []
    while (batch := await response.next()) is not None:
        got.extend(batch)
    assert len(got) == 20003 and got[-1].data == "[DONE]"
    response.close()
    assert pool.idle_count() == 1


async def test_idle_connections_are_bounded_and_expire(fake: FakeUpstream) -> None:
    pool = Pool(max_idle=2, idle_timeout=0.3)
    responses = await asyncio.gather(
        *(pool.request("POST", url(fake), JSON, chat("gen/1")) for _ in range(4))
    )
    for r in responses:
        await events(r)
        r.close()
    assert pool.idle_count() == 2
    await asyncio.sleep(0.8)
    assert pool.idle_count() == 0
    await pool.aclose()
    again = await pool.request("POST", url(fake), JSON, chat("gen/1"))  # usable after aclose
    assert not again.reused and await events(again)
    again.close()
    await pool.aclose()


def test_a_pool_used_from_two_event_loops(fake: FakeUpstream) -> None:
    pool = Pool(idle_timeout=0.2)

    async def once() -> tuple[bool, int]:
        response = await pool.request("POST", url(fake), JSON, chat("gen/1"))
        await events(response)
        response.close()
        await asyncio.sleep(0.5)  # the sweeper of this loop closes the idle connection
        return response.reused, pool.idle_count()

    assert asyncio.run(once()) == (False, 0)
    assert asyncio.run(once()) == (False, 0)


async def test_closing_the_pool_fails_a_running_stream(fake: FakeUpstream) -> None:
    pool = Pool()
    response = await pool.request("POST", url(fake), JSON, chat("gen/100?gap=0.05"))
    await pool.aclose()
    response.decode_with(SSEDecoder().feed)
    with pytest.raises(TransportError):
        while await response.next() is not None:
            pass
    response.close()


# --- connecting ----------------------------------------------------------------------------


async def test_connect_refused(pool: Pool) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening
        with pytest.raises(TransportError, match="cannot connect"):
            await pool.request("POST", f"http://127.0.0.1:{port}/", {}, b"")


async def test_connect_timeout() -> None:
    # A listener whose accept queue is full and never accepted: SYNs go unanswered.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        with suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        fillers.append(c)
    pool = Pool(connect_timeout=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(ConnectTimeout, match=r"within 0\.3s") as info:
            await pool.request("POST", f"http://127.0.0.1:{port}/", {}, b"")
        assert isinstance(info.value, TimeoutError)
        assert time.monotonic() - started < 10  # not the OS's own connect timeout (minutes)
    finally:
        for c in [*fillers, listener]:
            c.close()
        await pool.aclose()


async def test_bad_header_and_bad_url(pool: Pool) -> None:
    with pytest.raises(ValueError, match="invalid character"):
        await pool.request("POST", "http://127.0.0.1:1/", {"X": "a\r\nInjected: 1"}, b"")
    with pytest.raises(TransportError, match="not an http"):
        await pool.request("POST", "ftp://127.0.0.1/", {}, b"")


# --- small servers written here -------------------------------------------------------------

Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]


@asynccontextmanager
async def server(
    handler: Handler, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[int, list[int]]]:
    """Serves ``handler(request, writer)`` per request (True: keep the connection);
    yields the port and the number of requests per connection."""
    per_conn: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        per_conn.append(0)
        index = len(per_conn) - 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                per_conn[index] += 1
                if not await handler(request, writer):
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    try:
        yield srv.sockets[0].getsockname()[1], per_conn
    finally:
        srv.close()


STREAM_REPLY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    + RAW.split(b"Content-Type: text/event-stream\r\n", 1)[1]
)


async def stream_reply(request: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(STREAM_REPLY)
    return True


async def test_pieces_over_the_network(pool: Pool) -> None:
    async def slow(request: bytes, writer: asyncio.StreamWriter) -> bool:
        for i in range(0, len(STREAM_REPLY), 7):
            writer.write(STREAM_REPLY[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0.001)
        return True

    async with server(slow) as (port, per_conn):
        for _ in range(2):
            response = await pool.request("GET", f"http://127.0.0.1:{port}/s", {})
            assert await events(response) == list(SSEDecoder().iter([SSE_BODY]))
            response.close()
        assert per_conn == [2]


async def test_connection_close_and_close_delimited_bodies(pool: Pool) -> None:
    async def plain(request: bytes, writer: asyncio.StreamWriter) -> bool:
        if b"GET /close " in request:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            return False
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")  # no length: ends with the close
        return False

    async with server(plain) as (port, per_conn):
        for path, body in (("/close", b"ok"), ("/eof", b"until the end")):
            response = await pool.request("GET", f"http://127.0.0.1:{port}{path}", {})
            assert await response.read() == body
            response.close()
            assert pool.idle_count() == 0
        assert per_conn == [1, 1]


async def test_an_upstream_closing_an_idle_connection(pool: Pool) -> None:
    async def once(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)
        return False  # closes the keep-alive connection after a while

    async with server(once) as (port, per_conn):
        for _ in range(2):
            response = await pool.request("GET", f"http://127.0.0.1:{port}/", {})
            assert await response.read() == b"ok"
            response.close()
            await asyncio.sleep(0.2)
        assert per_conn == [1, 1]


async def test_a_malformed_response(pool: Pool) -> None:
    async def garbage(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        return True

    async with server(garbage) as (port, _):
        response = await pool.request("GET", f"http://127.0.0.1:{port}/", {})
        with pytest.raises(TransportError, match="malformed"):
            await response.read()
        response.close()


async def test_gzip_is_refused(pool: Pool) -> None:
    async def gz(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 0\r\n\r\n")
        return True

    async with server(gz) as (port, _):
        with pytest.raises(TransportError, match="Content-Encoding"):
            await pool.request("GET", f"http://127.0.0.1:{port}/", {})


# --- TLS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=x"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def tls_contexts(certificate: tuple[Path, Path]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = certificate
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    client_side = ssl.create_default_context(cafile=str(cert))
    return server_side, client_side


async def test_tls(certificate: tuple[Path, Path]) -> None:
    server_side, client_side = tls_contexts(certificate)
    pool = Pool(ssl_context=client_side)
    try:
        async with server(stream_reply, tls=server_side) as (port, per_conn):
            for host in ("127.0.0.1", "localhost", "127.0.0.1"):
                response = await pool.request("POST", f"https://{host}:{port}/v1/x", JSON, b"{}")
                assert response.status == 200
                assert await events(response) == list(SSEDecoder().iter([SSE_BODY]))
                response.close()
            assert sum(per_conn) == 3 and len(per_conn) == 2  # 127.0.0.1 reused
    finally:
        await pool.aclose()


async def test_tls_refuses_an_untrusted_certificate(certificate: tuple[Path, Path]) -> None:
    server_side, _ = tls_contexts(certificate)
    pool = Pool()  # the system's trust store
    try:
        async with server(stream_reply, tls=server_side) as (port, _):
            with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
                await pool.request("POST", f"https://127.0.0.1:{port}/", JSON, b"{}")
    finally:
        await pool.aclose()


def test_request_target_is_quoted() -> None:
    key, target, host = _parse("https://Example.com:8443/v1beta/models/a b:stream?alt=sse")
    assert key == ("https", "example.com", 8443)
    assert target == "/v1beta/models/a%20b:stream?alt=sse"
    assert host == "Example.com:8443"
    assert _parse("http://h/models/gen/10?drop_after=3:x?alt=sse")[1] == (
        "/models/gen/10?drop_after=3:x?alt=sse"
    )
    assert _parse("http://h")[1:] == ("/", "h")
