"""The front door, attacked from outside through real sockets against real gateway
processes: a key is checked before a byte of the body is read; headers are bounded in
size and time, idle connections closed, connections per address capped; Host and
Origin are checked (CSRF, DNS rebinding), CORS allowed origins get it properly, preflight
included; browsers must send JSON; logs cannot be forged; malformed ids and deep JSON
are 400s, not 500s."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway
from support.raw import RawResponse, closed_after, connect, read_response, request

MASTER = "master-" + "d" * 32
ALLOWED = "http://allowed.example"
CHAT = {"model": "local/echo", "messages": [{"role": "user", "content": "one two"}]}


@pytest.fixture(scope="module")
def tight(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    """Open mode, short deadlines, small headers, one allowed browser origin."""
    http = {
        "header_timeout": 1,
        "idle_timeout": 1,
        "max_header_bytes": 8192,
        "cors_origins": [ALLOWED],
    }
    gw = start_gateway(workdir, gateway_config(fake, http=http))
    yield gw
    gw.proc.stop()


@pytest.fixture(scope="module")
def keyed(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    gw = start_gateway(workdir, gateway_config(fake, master_key=MASTER))
    yield gw
    gw.proc.stop()


@pytest.fixture(scope="module")
def capped(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    http = {"max_connections_per_client": 4, "uncapped_clients": [], "idle_timeout": 60}
    gw = start_gateway(workdir, gateway_config(fake, http=http))
    yield gw
    gw.proc.stop()


def peak_rss_mib(gw: Gateway) -> float:
    """The most memory the gateway process has held at once, since it started."""
    status = Path(f"/proc/{gw.proc.popen.pid}/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert found is not None
    return int(found.group(1)) / 1024


# --- 3. a key before the body; headers, their time, idle connections, per address ---


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/admin/keys"])
def test_no_key_is_answered_before_the_body_is_sent(keyed: Gateway, path: str) -> None:
    with connect(keyed.proc.port) as sock:
        # 29 MB announced, not a byte of it sent: the answer must come anyway
        sock.sendall(request("POST", path, keyed.proc.port, {"Content-Length": "29000000"}))
        response = read_response(sock)
    assert response.status == 401
    assert "error" in response.json()


def test_unauthenticated_big_bodies_are_not_held(keyed: Gateway) -> None:
    import socket
    import threading

    before = peak_rss_mib(keyed)
    body = b"x" * (29 * 1024 * 1024)
    statuses: list[int] = []

    def one() -> None:
        with socket.create_connection(("127.0.0.1", keyed.proc.port), timeout=30) as sock:
            head = request("POST", "/v1/chat/completions", keyed.proc.port, {})
            sock.sendall(
                head.replace(b"\r\n\r\n", f"\r\nContent-Length: {len(body)}\r\n\r\n".encode())
            )
            reader = threading.Thread(target=lambda: statuses.append(read_response(sock).status))
            reader.start()
            with contextlib.suppress(OSError):  # (the gateway may close: it has answered)
                sock.sendall(body)
            reader.join(30)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    grown = peak_rss_mib(keyed) - before
    assert statuses == [401] * 16
    assert grown < 150, f"peak RSS grew by {grown:.0f} MiB for 16 refused 29 MB bodies"


def test_a_keyed_request_still_reads_its_body(keyed: Gateway) -> None:
    reply = httpx.post(
        f"{keyed.base_url}/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {MASTER}"},
        timeout=20,
    )
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]


def test_headers_over_the_limit_get_431_and_a_close(tight: Gateway) -> None:
    with connect(tight.proc.port) as sock:
        sock.sendall(request("GET", "/health", tight.proc.port, {"X-Big": "a" * 20_000}))
        response = read_response(sock)
        assert response.status == 431
        assert response.json()["error"]["code"] == "request_header_fields_too_large"
        closed_after(sock, 10)


def test_an_endless_header_is_cut_off_long_before_its_end(tight: Gateway) -> None:
    with connect(tight.proc.port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: ")
        status = None
        try:
            for _ in range(20 * 16):  # up to 20 MB, 64 KiB at a time
                sock.sendall(b"a" * 65536)
        except OSError:  # refused and closed mid-header
            status = read_response(sock).status
    assert status == 431


def test_a_header_slowloris_is_closed_after_the_header_timeout(tight: Gateway) -> None:
    with connect(tight.proc.port) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer = b""
        sock.settimeout(0.2)
        while time.monotonic() - start < 30:
            try:
                sock.sendall(b"X-Slow: 1\r\n")
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            answer += data
        elapsed = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert 0.8 < elapsed < 30  # header_timeout is 1 s; the upper bound is only a guard


def test_a_silent_connection_is_closed_after_the_idle_timeout(tight: Gateway) -> None:
    with connect(tight.proc.port) as sock:
        elapsed = closed_after(sock, 30)
    assert 0.8 < elapsed < 30  # idle_timeout is 1 s


def test_an_idle_keep_alive_connection_is_closed(tight: Gateway) -> None:
    with connect(tight.proc.port) as sock:
        sock.sendall(request("GET", "/health", tight.proc.port, {}))
        assert read_response(sock).status == 200
        elapsed = closed_after(sock, 30)
    assert 0.8 < elapsed < 30


def test_connections_per_address_are_capped(capped: Gateway) -> None:
    port = capped.proc.port
    held = [connect(port) for _ in range(4)]
    try:
        time.sleep(0.3)  # (accepted by now)
        with connect(port) as extra:
            response = read_response(extra)
            assert response.status == 429 and response.headers["retry-after"] == "1"
            assert response.json()["error"]["code"] == "too_many_connections"
        held.pop().close()
        deadline = time.monotonic() + 10
        while True:  # the freed place is taken again
            with connect(port) as again:
                again.sendall(request("GET", "/health", port, {}))
                status = read_response(again).status
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 200
    finally:
        for sock in held:
            sock.close()


# --- 4. Host, Origin, CORS, content type ----------------------------------------------


def post_raw(
    gw: Gateway, headers: dict[str, str], body: bytes, path: str = "/v1/chat/completions"
) -> RawResponse:
    with connect(gw.proc.port) as sock:
        sock.sendall(request("POST", path, gw.proc.port, headers, body))
        return read_response(sock)


BODY = json.dumps(CHAT).encode()


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/json"]
)
def test_a_page_elsewhere_cannot_drive_open_mode(tight: Gateway, content_type: str) -> None:
    response = post_raw(
        tight, {"Origin": "http://evil.example", "Content-Type": content_type}, BODY
    )
    assert response.status == 403
    assert response.json()["error"]["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in response.headers


def test_the_refusal_is_in_the_protocol_of_the_path(tight: Gateway) -> None:
    response = post_raw(
        tight, {"Origin": "http://evil.example", "Content-Type": "text/plain"}, BODY, "/v1/messages"
    )
    assert response.status == 403
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "permission_error"


def test_dns_rebinding_is_refused_by_host(tight: Gateway) -> None:
    with connect(tight.proc.port) as sock:
        head = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: evil.example:%d\r\n"
            b"Origin: http://evil.example:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (tight.proc.port, tight.proc.port, len(BODY))
        )
        sock.sendall(head + BODY)
        response = read_response(sock)
    assert response.status == 400
    assert response.json()["error"]["code"] == "host_not_allowed"
    for host in ("localhost", f"127.0.0.1:{tight.proc.port}", "[::1]:80", "app.localhost"):
        assert httpx.get(f"{tight.url}/health", headers={"Host": host}).status_code == 200


def test_with_a_master_key_any_host_is_served(keyed: Gateway) -> None:
    reply = httpx.get(f"{keyed.url}/health", headers={"Host": "api.example.com"})
    assert reply.status_code == 200


def test_a_browser_must_send_json_curl_need_not(tight: Gateway) -> None:
    same = f"http://127.0.0.1:{tight.proc.port}"
    refused = post_raw(tight, {"Origin": same, "Content-Type": "text/plain"}, BODY)
    assert refused.status == 415
    assert refused.json()["error"]["code"] == "unsupported_media_type"
    # what `curl -d '{...}'` sends: a form content type, no Origin
    curl = post_raw(tight, {"Content-Type": "application/x-www-form-urlencoded"}, BODY)
    assert curl.status == 200 and curl.json()["choices"][0]["message"]["content"]
    page = post_raw(tight, {"Origin": same, "Content-Type": "application/json"}, BODY)
    assert page.status == 200
    assert "access-control-allow-origin" not in page.headers  # same-origin: no CORS needed


def test_an_allowed_origin_gets_cors_preflight_included(tight: Gateway) -> None:
    preflight = httpx.options(
        f"{tight.base_url}/chat/completions",
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, last-event-id",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == (
        "authorization, content-type, last-event-id"
    )
    assert "Origin" in preflight.headers["vary"]
    with httpx.stream(
        "POST",
        f"{tight.base_url}/chat/completions",
        json={**CHAT, "stream": True},
        headers={"Origin": ALLOWED},
    ) as reply:
        text = reply.read().decode()
    assert reply.status_code == 200 and "[DONE]" in text
    assert reply.headers["access-control-allow-origin"] == ALLOWED
    exposed = reply.headers["access-control-expose-headers"].lower()
    assert "x-stream-id" in exposed and "x-request-id" in exposed
    denied = httpx.options(
        f"{tight.base_url}/chat/completions",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert denied.status_code == 403 and "access-control-allow-origin" not in denied.headers


# --- 10. logs ------------------------------------------------------------------------


def test_a_model_name_cannot_forge_or_hide_log_lines(tight: Gateway) -> None:
    forged = "2026-01-01 00:00:00,000 INFO tokenrelay.access req_forged openai model=ok"
    model = f"nobody/x\n{forged}\x00\x1b[2K"
    reply = httpx.post(f"{tight.base_url}/chat/completions", json={**CHAT, "model": model})
    assert reply.status_code == 404
    deadline = time.monotonic() + 10
    while "req_forged" not in tight.proc.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = tight.proc.output().splitlines()
    assert not [line for line in lines if line.startswith("2026-01-01")]
    logged = [line for line in lines if "req_forged" in line]
    assert logged and all("model=nobody/x\\n2026-01-01" in line for line in logged)
    assert all("\\x00\\x1b[2K" in line for line in logged)
    assert "\x00" not in tight.proc.output() and "\x1b" not in tight.proc.output()


# --- 11. 400s, not 500s ----------------------------------------------------------------


def deep(n: int) -> str:
    return "[" * n + "]" * n


def test_deeply_nested_json_is_a_400(tight: Gateway, keyed: Gateway) -> None:
    body = '{"model": "local/echo", "messages": [{"role": "user", "content": "x"}], "x": %s}'
    reply = httpx.post(f"{tight.base_url}/chat/completions", content=body % deep(1000))
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["type"] == "invalid_request_error"
    # tool-call arguments are a JSON text inside the JSON: decoded when translated
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": deep(1000)}}
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]
    for model in ("fakeant/gen/3", "fakegem/gen/3"):
        translated = httpx.post(
            f"{tight.base_url}/chat/completions", json={"model": model, "messages": messages}
        )
        assert translated.status_code == 400, translated.text
    admin = httpx.post(
        f"{keyed.url}/admin/keys",
        content='{"name": ' + deep(1000) + "}",
        headers={"Authorization": f"Bearer {MASTER}"},
    )
    assert admin.status_code == 400, admin.text


@pytest.mark.parametrize(
    ("query", "event_id"),
    [("?after=²", None), ("?after=" + "9" * 5000, None), ("", "x:²"), ("", "x:" + "7" * 5000)],
)
def test_malformed_sequence_numbers_are_400s(
    tight: Gateway, query: str, event_id: str | None
) -> None:
    headers = {"Last-Event-ID": event_id.encode("latin-1")} if event_id else {}
    reply = httpx.get(f"{tight.base_url}/streams/x{query}", headers=headers)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] in ("after", "last-event-id")
    if event_id:
        again = httpx.post(f"{tight.base_url}/chat/completions", json=CHAT, headers=headers)
        assert again.status_code == 400, again.text


def test_nothing_crashed(tight: Gateway, keyed: Gateway, capped: Gateway) -> None:
    for gw in (tight, keyed, capped):
        assert "Traceback" not in gw.proc.output(), gw.proc.output()[-3000:]
