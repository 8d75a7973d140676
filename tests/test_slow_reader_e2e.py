"""A client that reads slower than its stream is produced, past ``max_stream_bytes``:
the frames it has not read are dropped from the buffer, and it is told so with an
error frame in its own protocol, never a clean end with a silent gap."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway

from tokenrelay.sse import SSEDecoder

WORDS = " ".join(f"w{i}" for i in range(40_000))


@pytest.fixture(scope="module")
def gw(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    config = gateway_config(
        fake, local={"rate": 0}, streams={"grace": 5, "max_stream_bytes": 64 * 1024}
    )
    gateway = start_gateway(workdir, config)
    yield gateway
    gateway.proc.stop()


def dechunk(raw: bytes) -> tuple[bytes, bytes]:
    """(head, body) of an HTTP/1.1 response with a chunked body."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    body = bytearray()
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body += rest[:size]
        rest = rest[size + 2 :]
    return head, bytes(body)


def slow_read(gw: Gateway, path: str, body: dict[str, object], wait: float) -> list[str]:
    """POST ``body``, read nothing for ``wait`` seconds (a small receive buffer), then
    everything: the SSE data of each event."""
    payload = json.dumps(body).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", gw.proc.port))
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
        + payload
    )
    time.sleep(wait)
    sock.settimeout(60)
    raw = bytearray()
    while chunk := sock.recv(1 << 20):
        raw += chunk
    sock.close()
    head, data = dechunk(bytes(raw))
    assert head.startswith(b"HTTP/1.1 200"), head
    return [e.data for e in SSEDecoder().iter([data])]


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_a_reader_behind_a_trimmed_buffer_gets_an_error_frame(gw: Gateway, protocol: str) -> None:
    messages = [{"role": "user", "content": WORDS}]
    if protocol == "openai":
        body = {"model": "local/echo", "stream": True, "messages": messages}
        events = slow_read(gw, "/v1/chat/completions", body, 4)
    else:
        body = {"model": "local/echo", "stream": True, "max_tokens": 100_000, "messages": messages}
        events = slow_read(gw, "/v1/messages", body, 4)
    assert events, "the frames read before falling behind"
    last = json.loads(events[-1])
    assert last.get("type", "error") == "error" and last["error"]["type"] != ""
    assert "max_stream_bytes" in last["error"]["message"]
    if protocol == "openai":
        assert last["error"]["code"] == "stream_gone"
    assert "[DONE]" not in events
