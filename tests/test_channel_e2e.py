"""The gateway's direct channel (server/channel.py): live frames written to the client
connection by the stream's producer. Checked where it could go wrong: the installed
uvicorn really offers it, a client too slow to take the bytes gets every frame once and
in order (the writes fall back to ASGI ``send`` and come back), and an HTTP/1.0 client
(not offered the channel, whose framing is HTTP/1.1's) is served the plain ASGI way."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import httpx
import uvicorn
from support.net import free_port
from support.procs import FakeUpstream, Gateway, sse_payloads

from tokenrelay.server.channel import GatewayProtocol, channel_of
from tokenrelay.sse import SSEDecoder


def _request(path: str, body: dict[str, Any], version: str = "1.1") -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/{version}\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return bytes(out)
        out += body[:size]
        assert body[size : size + 2] == b"\r\n"
        body = body[size + 2 :]


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def _content(payloads: list[Any]) -> str:
    return "".join(
        c["delta"].get("content") or ""
        for p in payloads
        if isinstance(p, dict)
        for c in p.get("choices", [])
    )


def test_the_installed_uvicorn_offers_the_channel_to_http_1_1_only() -> None:
    seen: dict[str, bool] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen[scope["http_version"]] = channel_of(scope) is not None
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def run() -> None:
        port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            http=GatewayProtocol,
            lifespan="off",
            log_level="error",
        )
        server = uvicorn.Server(config)
        task = asyncio.ensure_future(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        for version in ("1.1", "1.0"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET / HTTP/{version}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            assert (await reader.read()).startswith(b"HTTP/1.1 204")
            writer.close()
        server.should_exit = True
        await task

    asyncio.run(run())
    assert seen == {"1.1": True, "1.0": False}


def test_a_client_too_slow_to_read_gets_every_frame_once_in_order(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    """Megabytes the client does not read for a second: the connection pushes back, the
    channel refuses the producer's direct writes (the request's own task produces), and
    a task started then writes the rest with back-pressure. The client gets exactly the
    upstream's frames."""
    model = "gen/12000"
    body = {
        "model": f"fake/{model}",
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
    }
    direct = httpx.post(f"{fake.base_url}/v1/chat/completions", json={**body, "model": model})
    expected = sse_payloads(direct.content)
    port = int(gateway.url.rsplit(":", 1)[1])
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(_request("/v1/chat/completions", body))
        time.sleep(1.0)  # the gateway's buffers fill; the upstream has long finished
        raw = _read_all(sock)
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    events = list(SSEDecoder().iter([_dechunk(rest)]))
    ids = [int(e.id.rsplit(":", 1)[1]) for e in events if e.id]
    assert ids == list(range(1, len(ids) + 1))
    got = [e.data if e.data == "[DONE]" else json.loads(e.data) for e in events]
    assert len(got) == len(expected) > 12000
    assert _content(got) == _content(expected)
    assert got[-1] == "[DONE]"


def test_an_http_1_0_client_is_streamed_the_asgi_way(gateway: Gateway) -> None:
    body = {"model": "fake/gen/50", "messages": [{"role": "user", "content": "x"}], "stream": True}
    port = int(gateway.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_request("/v1/chat/completions", body, version="1.0"))
        raw = _read_all(sock)
    head, _, rest = raw.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():  # uvicorn chunks for 1.0 clients too
        rest = _dechunk(rest)
    payloads = sse_payloads(rest)
    assert payloads[-1] == "[DONE]"
    assert sum(1 for p in payloads if isinstance(p, dict) and p.get("choices")) >= 50
