"""Errors the OpenAI way, through the official SDK and raw HTTP: bad input, unknown
models, upstream refusals (never leaking the upstream key), failures after the stream
started, oversized bodies, and a client that goes away."""

from __future__ import annotations

import json
import re
import time
import urllib.parse

import httpx
import openai
import pytest
from support.procs import UPSTREAM_KEY, FakeUpstream, Gateway, sse_payloads


def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0)


def post(gateway: Gateway, body: bytes | dict[str, object], **kw: object) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{gateway.base_url}/chat/completions", content=content, timeout=10, **kw)  # type: ignore[arg-type]


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


def test_invalid_json_is_400(gateway: Gateway) -> None:
    error = assert_openai_error(post(gateway, b'{"model": "local/echo", '), 400)
    assert error["type"] == "invalid_request_error"
    assert "JSON" in str(error["message"])


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": 7}, "model"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stream": "yes"}, "stream"),
        ({"tools": [{"type": "function"}]}, "tools[0].function.name"),
    ],
)
def test_invalid_parameters_are_400_naming_the_param(
    gateway: Gateway, patch: dict[str, object], param: str
) -> None:
    body = {"model": "local/echo", "messages": [{"role": "user", "content": "x"}], **patch}
    with pytest.raises(openai.BadRequestError) as info:
        client(gateway).chat.completions.create(**body)  # type: ignore[call-overload]
    assert info.value.status_code == 400
    assert isinstance(info.value.body, dict) and info.value.body["param"] == param


def test_unknown_model_is_404(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client(gateway).chat.completions.create(
            model="nobody/nothing", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.code == "model_not_found"


def test_upstream_refusal_keeps_status_and_message_not_the_key(gateway: Gateway) -> None:
    body = json.dumps(
        {"error": {"message": f"Incorrect API key provided: {UPSTREAM_KEY}", "type": "x"}}
    )
    model = "fake/gen/3?status=401&body=" + urllib.parse.quote(body)
    with pytest.raises(openai.AuthenticationError) as info:
        client(gateway).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}], stream=True
        )
    assert "Incorrect API key provided" in info.value.message
    assert UPSTREAM_KEY not in info.value.message
    assert UPSTREAM_KEY not in json.dumps(info.value.body)


def test_upstream_429_is_429_with_retry_after(gateway: Gateway) -> None:
    model = "fake/gen/3?status=429&retry_after=7"
    response = post(
        gateway, {"model": model, "messages": [{"role": "user", "content": "x"}], "stream": True}
    )
    assert_openai_error(response, 429)
    assert response.headers["retry-after"] == "7"


def test_unreachable_upstream_is_502(workdir: object, fake: FakeUpstream) -> None:
    from support.net import free_port
    from support.procs import start_gateway

    config = {
        "env_providers": False,
        "providers": [
            {"name": "down", "base_url": f"http://127.0.0.1:{free_port()}/v1", "models": ["*"]}
        ],
    }
    gw = start_gateway(workdir, config)  # type: ignore[arg-type]
    try:
        response = post(gw, {"model": "down/m", "messages": [{"role": "user", "content": "x"}]})
        error = assert_openai_error(response, 502)
        assert "down" in str(error["message"])
    finally:
        gw.proc.stop()


def test_failure_after_the_stream_started_is_an_error_frame(gateway: Gateway) -> None:
    stream = client(gateway).chat.completions.create(
        model="fake/gen/50?drop_after=4", messages=[{"role": "user", "content": "x"}], stream=True
    )
    got = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            got.append(chunk)
    assert got, "chunks before the failure reach the client"
    assert "upstream" in info.value.message


@pytest.mark.parametrize("fault", ["malformed_at=3", "no_done=1&drop_after=5"])
def test_bad_upstream_frames_end_the_stream_with_an_error(gateway: Gateway, fault: str) -> None:
    body = {
        "model": f"fake/gen/10?{fault}",
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
    }
    payloads = sse_payloads(post(gateway, body).content)
    assert "error" in payloads[-1]
    assert all("error" not in p for p in payloads[:-1])


def test_invalid_utf8_from_upstream_is_replaced_not_fatal(gateway: Gateway) -> None:
    body = {
        "model": "fake/gen/6?bad_utf8_at=2",
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
    }
    response = post(gateway, body)
    response.content.decode("utf-8")  # the client always gets valid UTF-8
    payloads = sse_payloads(response.content)
    assert payloads[-1] == "[DONE]"
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in payloads[:-1] if c["choices"]
    )
    assert "\ufffd" in text


def test_body_over_the_limit_is_413(gateway: Gateway) -> None:
    big = {"model": "local/echo", "messages": [{"role": "user", "content": "x" * 1_200_000}]}
    assert_openai_error(post(gateway, big), 413)


def test_unknown_route_is_an_openai_shaped_404(gateway: Gateway) -> None:
    assert_openai_error(httpx.get(f"{gateway.base_url}/nothing-here"), 404)


def test_client_disconnect_closes_the_upstream_within_a_second(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    model = f"fake/gen/400?gap=0.05&ttft=0.00{time.monotonic_ns() % 10**6:06d}"  # unique
    upstream_model = model.removeprefix("fake/")
    body = {"model": model, "messages": [{"role": "user", "content": "x"}], "stream": True}
    with httpx.stream(
        "POST", f"{gateway.base_url}/chat/completions", json=body, timeout=10
    ) as response:
        for i, _ in enumerate(response.iter_lines()):
            if i >= 6:
                break
        closed_at = time.time()
    deadline = time.monotonic() + 3
    while True:
        entry = fake.find(upstream_model)
        if entry.get("client_closed"):
            break
        assert time.monotonic() < deadline, f"the upstream was not closed: {entry}"
        time.sleep(0.05)
    assert entry["ended"] - closed_at < 1.0


def test_nothing_crashed(gateway: Gateway) -> None:
    assert gateway.proc.popen.poll() is None
    assert "Traceback" not in gateway.proc.output()
    # The refusal test puts the key in the model name it sends, which is logged as asked.
    logged = re.sub(r"\S*%20sk-upstream\S*", "(model)", gateway.proc.output())
    assert UPSTREAM_KEY not in logged
