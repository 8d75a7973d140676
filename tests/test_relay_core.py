"""The relay core in process: ``Gateway.chat`` and the response it returns, over a
scripted provider (``support/scripted.py``), no subprocess and no socket. Retries
before the first byte, fallbacks, the breaker, the watchdog's timeouts, and the
endings of a stream (finished, failed in-band, client gone, stopped, interrupted),
each checked exactly: the frames, the attempts, the upstreams closed, the outcome.
The end-to-end files test the same through real servers; these run in a second."""

from __future__ import annotations

import asyncio
from typing import Any

from support.scripted import (
    Client,
    Fail,
    Pause,
    Script,
    ScriptedProvider,
    answer,
    call,
    gateway,
    outcomes,
    refused,
)

from tokenrelay.events import GatewayError, Start, TextDelta
from tokenrelay.router import ModelSpec, Timeouts
from tokenrelay.server.relay import Gateway
from tokenrelay.streams.hub import StreamState

ASK = [{"role": "user", "content": "hi"}]


def body(model: str = "a/m", stream: bool = True) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": ASK}


def texts(data: list[Any]) -> list[str]:
    return [
        c["delta"]["content"]
        for d in data
        if isinstance(d, dict) and d.get("choices")
        for c in d["choices"]
        if c["delta"].get("content")
    ]


def finish(data: list[Any]) -> list[str]:
    return [
        c["finish_reason"]
        for d in data
        if isinstance(d, dict) and d.get("choices")
        for c in d["choices"]
        if c["finish_reason"]
    ]


def errors(data: list[Any]) -> list[dict[str, Any]]:
    return [d["error"] for d in data if isinstance(d, dict) and "error" in d]


def fallback(*names: str, timeouts: Timeouts | None = None) -> dict[str, ModelSpec]:
    """Model ``m``: deployment ``a/m``, then the fallbacks ``names``."""
    return {"m": ModelSpec([("a/m", 1.0)], list(names), timeouts)}


async def closed(gw: Gateway) -> None:
    await gw.hub.aclose()


async def ended(gw: Gateway, requests: int = 1) -> None:
    """Until every stream's producer ended and ``requests`` were accounted for (a
    production of its own task, off a gateway connection, ends a moment after its
    response does)."""
    for _ in range(500):
        if not gw.hub.live() and sum(outcomes(gw).values()) >= requests:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("a stream is still being produced")


async def test_a_stream_relays_every_read_in_order_then_done() -> None:
    a = ScriptedProvider("a", [answer("Hel", "lo", " there")])
    gw = gateway([a])
    reply = await call(gw, body())
    data = reply.data()
    assert reply.status == 200
    assert texts(data) == ["Hel", "lo", " there"]
    assert finish(data) == ["stop"]
    assert data[-1] == "[DONE]"
    assert reply.headers["x-tokenrelay-attempts"] == "1"
    assert (a.opened, a.closed) == (1, 1)
    assert outcomes(gw) == {"ok": 1}
    await closed(gw)


async def test_retries_before_the_first_byte_then_streams() -> None:
    a = ScriptedProvider("a", [refused(503), refused(429), answer("ok")])
    gw = gateway([a])
    reply = await call(gw, body())
    assert reply.status == 200
    assert texts(reply.data()) == ["ok"]
    assert reply.headers["x-tokenrelay-attempts"] == "3"
    assert a.opened == 3
    assert outcomes(gw) == {"ok": 1}
    await closed(gw)


async def test_a_failure_before_any_frame_is_retried_too() -> None:
    broken = Script([Fail(GatewayError("upstream", "reset", 502))])
    a = ScriptedProvider("a", [broken, answer("second")])
    gw = gateway([a])
    reply = await call(gw, body())
    assert texts(reply.data()) == ["second"]
    assert errors(reply.data()) == []
    assert (a.opened, a.closed) == (2, 2)
    await closed(gw)


async def test_a_client_error_is_not_retried_and_reaches_the_client() -> None:
    a = ScriptedProvider("a", [refused(400, "bad field 'x'"), answer("never")])
    gw = gateway([a])
    reply = await call(gw, body())
    assert reply.status == 400
    assert reply.json()["error"]["message"] == "bad field 'x'"
    assert a.opened == 1
    await closed(gw)


async def test_attempts_stop_at_max_attempts_with_the_last_error() -> None:
    a = ScriptedProvider("a", [refused(503, f"down {i}") for i in range(3)])
    gw = gateway([a], max_attempts=3)
    reply = await call(gw, body())
    assert reply.status == 503
    assert reply.json()["error"]["message"] == "down 2"
    assert a.opened == 3
    assert outcomes(gw) == {"upstream": 1}
    await closed(gw)


async def test_a_fallback_answers_when_the_deployment_fails() -> None:
    a = ScriptedProvider("a", [refused(500)])
    b = ScriptedProvider("b", [answer("from b")])
    gw = gateway([a, b], models=fallback("b/m"))
    reply = await call(gw, body("m"))
    assert texts(reply.data()) == ["from b"]
    assert reply.headers["x-tokenrelay-deployment"] == "b/m"
    assert (a.opened, b.opened) == (1, 1)
    assert b.requests[0][0] == "m"  # the fallback's own model name upstream
    await closed(gw)


async def test_the_breaker_takes_a_failing_deployment_out() -> None:
    a = ScriptedProvider("a", [refused(503), refused(503)])
    b = ScriptedProvider("b", [answer("1"), answer("2"), answer("3")])
    gw = gateway([a, b], models=fallback("b/m"), breaker=(2, 60.0))
    for _ in range(3):
        assert (await call(gw, body("m"))).status == 200
    assert a.opened == 2  # open after two failures: the third request went to b at once
    assert b.opened == 3
    (deployment,) = [d for d in gw.router.deployments() if d.name == "a/m"]
    assert deployment.breaker.state == "open"
    await closed(gw)


async def test_a_first_token_timeout_opens_the_next_attempt() -> None:
    silent = Script([Pause()])  # answers, then sends nothing
    a = ScriptedProvider("a", [silent, answer("late")])
    gw = gateway([a], timeouts=Timeouts(first_token=0.2))
    reply = await call(gw, body())
    assert texts(reply.data()) == ["late"]
    assert (a.opened, a.closed) == (2, 2)
    await closed(gw)


async def test_a_hung_open_is_timed_out_and_retried() -> None:
    a = ScriptedProvider("a", [Script(hang=True), answer("ok")])
    gw = gateway([a], timeouts=Timeouts(first_token=0.2))
    reply = await call(gw, body())
    assert texts(reply.data()) == ["ok"]
    assert reply.headers["x-tokenrelay-attempts"] == "2"
    await closed(gw)


async def test_an_idle_timeout_after_the_first_byte_is_an_in_band_error() -> None:
    stalls = Script([[Start("up", "m"), TextDelta("par")], Pause()])
    a = ScriptedProvider("a", [stalls, answer("never")])
    gw = gateway([a], timeouts=Timeouts(idle=0.2))
    reply = await call(gw, body())
    data = reply.data()
    assert reply.status == 200
    assert texts(data) == ["par"]
    assert [e["code"] for e in errors(data)] == ["idle_timeout"]
    assert (a.opened, a.closed) == (1, 1)
    assert outcomes(gw) == {"error": 1}
    await closed(gw)


async def test_the_total_timeout_is_not_retried() -> None:
    a = ScriptedProvider("a", [Script(hang=True), answer("never")])
    gw = gateway([a], timeouts=Timeouts(total=0.2), keepalive=30.0)
    reply = await call(gw, body())
    assert reply.status == 504
    assert reply.json()["error"]["code"] == "total_timeout"
    assert a.opened == 1
    await closed(gw)


async def test_a_failure_after_the_first_byte_is_delivered_in_band() -> None:
    script = Script(
        [[Start("up", "m"), TextDelta("half")], Fail(GatewayError("upstream", "x", 502))]
    )
    a = ScriptedProvider("a", [script, answer("never")])
    gw = gateway([a])
    data = (await call(gw, body())).data()
    assert texts(data) == ["half"]
    assert [e["message"] for e in errors(data)] == ["x"]
    assert a.opened == 1
    await closed(gw)


async def test_pings_go_out_while_the_upstream_is_slow_to_answer() -> None:
    a = ScriptedProvider("a", [Script(answer("ok").steps, stall=0.35)])
    gw = gateway([a], keepalive=0.1)
    reply = await call(gw, body())
    assert reply.body.startswith(b": ping")
    assert texts(reply.data()) == ["ok"]
    await closed(gw)


async def test_a_client_that_leaves_mid_stream_closes_the_upstream() -> None:
    endless = Script([[Start("up", "m"), TextDelta("a")], Pause()])
    a = ScriptedProvider("a", [endless])
    gw = gateway([a])
    client = Client(body())
    client.on_body = lambda chunk: client.leave() if b'"a"' in chunk else None
    await call(gw, body(), client=client)
    await ended(gw)
    (stream,) = [gw.hub.local(client.reply.headers["x-stream-id"])]
    assert stream is not None and stream.done
    assert stream.state is StreamState.CANCELLED
    assert a.closed == 1
    assert outcomes(gw) == {"cancelled": 1}
    await closed(gw)


async def test_a_client_that_leaves_while_opening_stops_every_attempt() -> None:
    a = ScriptedProvider("a", [Script(hang=True), answer("never")])
    gw = gateway([a], keepalive=30.0)
    client = Client(body())
    asyncio.get_running_loop().call_later(0.1, client.leave)
    await call(gw, body(), client=client)
    assert a.opened == 1
    assert client.reply.status == 0  # nothing was sent
    assert outcomes(gw) == {"disconnected": 1}
    await closed(gw)


async def _stopped(how: str) -> tuple[Gateway, ScriptedProvider, list[Any]]:
    endless = Script([[Start("up", "m"), TextDelta("a")], Pause()])
    a = ScriptedProvider("a", [endless])
    gw = gateway([a])
    client = Client(body())

    def first(chunk: bytes) -> None:
        if b'"a"' in chunk:
            (stream,) = gw.hub.live()
            stream.cancel() if how == "stop" else stream.interrupt()

    client.on_body = first
    reply = await call(gw, body(), headers={"x-tokenrelay-resume": "1"}, client=client)
    await ended(gw)
    return gw, a, reply.data()


async def test_a_user_stop_ends_the_stream_as_cancelled() -> None:
    gw, a, data = await _stopped("stop")
    assert texts(data) == ["a"]
    assert errors(data) == []
    assert data[-1] == "[DONE]"
    assert a.closed == 1
    assert outcomes(gw) == {"cancelled": 1}
    await closed(gw)


async def test_a_shutdown_ends_the_stream_with_an_error_to_resume_from() -> None:
    gw, a, data = await _stopped("interrupt")
    assert texts(data) == ["a"]
    assert [e["code"] for e in errors(data)] == ["shutting_down"]
    assert a.closed == 1
    assert outcomes(gw) == {"interrupted": 1}
    await closed(gw)


async def test_a_non_streaming_answer_is_the_fold_and_retries_any_failure() -> None:
    broken = Script([[Start("up", "m"), TextDelta("x")], Fail(GatewayError("upstream", "r", 502))])
    a = ScriptedProvider("a", [broken, answer("Hel", "lo")])
    gw = gateway([a])
    reply = await call(gw, body(stream=False))
    answer_ = reply.json()
    assert reply.status == 200
    assert answer_["choices"][0]["message"]["content"] == "Hello"
    assert answer_["usage"]["completion_tokens"] == 2
    assert reply.headers["x-tokenrelay-attempts"] == "2"
    assert (a.opened, a.closed) == (2, 2)
    await closed(gw)


async def test_in_flight_slots_are_given_back_however_a_request_ends() -> None:
    endless = Script([[Start("up", "m"), TextDelta("a")], Pause()])
    a = ScriptedProvider("a", [answer("1"), refused(400), endless, Script(hang=True)])
    gw = gateway([a], max_attempts=1, keepalive=30.0)
    await call(gw, body())
    await call(gw, body())
    client = Client(body())
    client.on_body = lambda chunk: client.leave() if b'"a"' in chunk else None
    await call(gw, body(), client=client)
    client = Client(body())
    asyncio.get_running_loop().call_later(0.1, client.leave)
    await call(gw, body(), client=client)
    await ended(gw, 4)
    assert [d.in_flight for d in gw.router.deployments()] == [0]
    assert a.opened == 4
    await closed(gw)
