"""A new protocol is one declaration and one registration: this test defines "toy", an
OpenAI-like wire with every field renamed, registers it from here, and streams through
it end to end in both roles, with nothing in ``server/``, ``config.py`` or ``api.py``
knowing it exists.

The gateway runs in this process (uvicorn on a real socket, in a thread), because the
toy protocol is an object of this test: a gateway process could only see it through a
plugin hook in the config, which is what this test shows is not needed. The toy
upstream is the gateway itself: a provider ``loop`` speaks toy to the gateway's own
``/toy/v1/generate``, which answers from ``local/echo``. So one request from the
``openai`` SDK through ``loop/local/echo`` runs the toy codec on both sides: the outer
hop as an upstream (toy request out, toy frames decoded), the inner hop as a client
(toy request decoded, toy frames encoded).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from support.net import free_port

from tokenrelay.config import parse
from tokenrelay.events import (
    ChatRequest,
    Error,
    Event,
    Finish,
    GatewayError,
    Message,
    Source,
    Start,
    TextDelta,
    TextPart,
    Usage,
    kind_for_status,
)
from tokenrelay.fold import Fold, Tally, charged_usage
from tokenrelay.protocols.base import (
    MALFORMED,
    TRUNCATED,
    InBandEnd,
    ProtocolSpec,
    Route,
    bearer,
)
from tokenrelay.protocols.registry import REGISTRY
from tokenrelay.server.app import create_app
from tokenrelay.sse import ServerSentEvent, SSEDecoder
from tokenrelay.sse import encode as sse_encode

pytestmark = pytest.mark.timeout(60)

MESSAGE = "toy wires stream token by token"


# --- the toy wire: {"engine", "turns": [{"who", "say"}], "live"} -> {"piece"}... ------


def _frame(obj: dict[str, Any]) -> bytes:
    return sse_encode(json.dumps(obj))


def _error_frame(error: Error) -> bytes:
    return _frame({"trouble": {"what": error.kind, "why": error.message}})


def _trailer(tally: Tally) -> list[bytes]:
    usage = charged_usage(tally)
    halt = {
        "halt": tally.finish_reason or "stop",
        "spent": {"in": usage.input, "out": usage.output},
    }
    return [_frame(halt), sse_encode("[END]")]


class ToyEncoder(InBandEnd):
    _error_frame = staticmethod(_error_frame)

    def __init__(self, tally: Tally) -> None:
        self.tally, self.ended = tally, False

    def encode(self, events: list[Event]) -> list[bytes]:
        out: list[bytes] = []
        for event in events:
            if isinstance(event, TextDelta) and event.text and not event.choice:
                self.tally.output_chars += len(event.text)
                out.append(_frame({"piece": event.text}))
            elif isinstance(event, Finish) and not event.choice:
                self.tally.finish_reason = event.reason
            elif isinstance(event, Usage):
                self.tally.usage = event
            elif isinstance(event, Error):
                out += self.fail(event)
                break
        self.tally.started = self.tally.started or bool(out)
        return out

    def close(self, cancelled: bool = False) -> list[bytes]:
        if self.ended:
            return []
        self.ended = True
        return _trailer(self.tally)


class ToyPassthrough(InBandEnd):
    """Toy in, toy out: frames forwarded as written, read for the tally."""

    _error_frame = staticmethod(_error_frame)
    payloads = False

    def __init__(self, tally: Tally) -> None:
        self.tally, self.ended = tally, False

    def encode(self, frames: list[Any]) -> list[bytes]:
        out: list[bytes] = []
        for frame in frames:
            if frame.data != "[END]":
                obj = json.loads(frame.data)
                self.tally.output_chars += len(obj.get("piece", ""))
                self.tally.finish_reason = obj.get("halt", self.tally.finish_reason)
            out.append(sse_encode(frame.data))
            if frame.data == "[END]":
                self.ended = True
        self.tally.started = self.tally.started or bool(out)
        return out

    def close(self, cancelled: bool = False) -> list[bytes]:
        if self.ended:
            return []
        self.ended = True
        return _trailer(self.tally)


class ToyDecoder:
    def __init__(self) -> None:
        self.done = False
        self._started = False

    def feed(self, frame: ServerSentEvent) -> list[Event]:
        if frame.data == "[END]":
            self.done = True
            return []
        try:
            obj = json.loads(frame.data)
        except ValueError:
            return [MALFORMED]
        out: list[Event] = [] if self._started else [Start("toy-1", "")]
        self._started = True
        if "piece" in obj:
            out.append(TextDelta(obj["piece"]))
        if "halt" in obj:
            spent = obj.get("spent") or {}
            out += [Finish(obj["halt"]), Usage(spent.get("in", 0), spent.get("out", 0))]
        if "trouble" in obj:
            out.append(Error(obj["trouble"]["what"], obj["trouble"]["why"], 502))
        return out

    def close(self) -> list[Event]:
        return [] if self.done else [TRUNCATED]


class ToyCodec:
    """Both roles of the toy protocol, as the codec module of a real one would be."""

    name = "toy"
    FORWARDED_HEADERS: tuple[str, ...] = ()

    # client side
    def decode_request(self, body: Any, params: Mapping[str, str] | None = None) -> ChatRequest:
        if not isinstance(body, dict) or not isinstance(body.get("engine"), str):
            raise GatewayError("invalid_request", "'engine' is required", param="engine")
        turns = [Message(t["who"], [TextPart(t["say"])]) for t in body.get("turns") or ()]
        return ChatRequest(
            body["engine"], turns, stream=bool(body.get("live")), source=Source("toy", body)
        )

    def stream_encoder(self, request: ChatRequest, model: str, tally: Tally) -> ToyEncoder:
        return ToyEncoder(tally)

    def passthrough(self, request: ChatRequest, model: str, tally: Tally) -> ToyPassthrough:
        return ToyPassthrough(tally)

    def encode_response(self, fold: Fold, model: str) -> dict[str, Any]:
        choice = fold.ordered_choices()[0]
        usage = fold.usage_or_estimate()
        spent = {"in": usage.input, "out": usage.output}
        return {"engine": model, "said": choice.text, "halt": choice.finish_reason, "spent": spent}

    def error_body(self, error: GatewayError) -> dict[str, Any]:
        return {"trouble": {"what": error.kind, "why": error.message}}

    def error_frame(self, error: Error) -> bytes:
        return _error_frame(error)

    # upstream side
    def url(self, base_url: str, model: str, stream: bool) -> str:
        return base_url.rstrip("/") + "/generate"

    def headers(self, api_key: str | None) -> dict[str, str]:
        return bearer(api_key)

    def encode_request(self, request: ChatRequest, model: str) -> dict[str, Any]:
        turns = [
            {"who": m.role, "say": "".join(p.text for p in m.parts if isinstance(p, TextPart))}
            for m in request.messages
        ]
        return {"engine": model, "turns": turns, "live": True}

    def stream_decoder(self) -> ToyDecoder:
        return ToyDecoder()

    def decode_error(self, status: int, body: bytes) -> GatewayError:
        trouble = json.loads(body).get("trouble") or {}
        return GatewayError(kind_for_status(status), str(trouble.get("why")), status=status)


def decode_body(body: Any) -> list[Event]:
    """A non-streaming toy answer as the events of its stream."""
    spent = body.get("spent") or {}
    return [
        Start("toy-1", body["engine"]),
        TextDelta(body["said"]),
        Finish(body["halt"]),
        Usage(spent.get("in", 0), spent.get("out", 0)),
    ]


CODEC = ToyCodec()
TOY = ProtocolSpec(
    name="toy",
    client=CODEC,
    upstream=CODEC,
    routes=(Route("chat", "/v1/generate"), Route("models", "/v1/engines")),
    prefix="/toy",
    model_list=lambda models: {"engines": [m for m, _ in models]},
    auth=bearer,
    decode_body=decode_body,
)


# --- a gateway in this process that speaks it ----------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    REGISTRY.register(TOY)
    workdir: Path = tmp_path_factory.mktemp("toy")
    port = free_port()
    try:
        config = parse(
            {
                "env_providers": False,
                "local": {"rate": 500},
                "database_url": f"sqlite:///{workdir}/toy.db",
                "usage": {"spill_dir": str(workdir / "spool")},
                "providers": [
                    {
                        "name": "loop",
                        "protocol": "toy",
                        "base_url": f"http://127.0.0.1:{port}/toy/v1",
                        "api_key": "sk-loop",
                    }
                ],
            },
            env={},
        )
        server = uvicorn.Server(
            uvicorn.Config(create_app(config), "127.0.0.1", port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
        server.should_exit = True
        thread.join(30)
    finally:
        REGISTRY.unregister("toy")


def _toy_stream(base: str, path: str, model: str) -> list[dict[str, Any] | str]:
    body = {"engine": model, "turns": [{"who": "user", "say": MESSAGE}], "live": True}
    with httpx.stream(
        "POST", base + path, json=body, headers={**bearer("sk-client"), "X-Tokenrelay-Resume": "1"}
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read()
    events = list(SSEDecoder().iter([raw]))
    assert all(e.id and e.id.startswith(response.headers["x-stream-id"]) for e in events)
    return [e.data if e.data == "[END]" else json.loads(e.data) for e in events]


@pytest.mark.parametrize("path", ["/toy/v1/generate", "/v1/generate"])
def test_a_toy_client_streams_from_a_canonical_upstream(base: str, path: str) -> None:
    frames = _toy_stream(base, path, "local/echo")
    pieces = [f["piece"] for f in frames if isinstance(f, dict) and "piece" in f]
    assert "".join(pieces) == MESSAGE
    assert len(pieces) == len(MESSAGE.split())  # streamed word by word, not folded
    assert frames[-2] == {"halt": "stop", "spent": {"in": frames[-2]["spent"]["in"], "out": 6}}
    assert frames[-1] == "[END]"


def test_an_openai_client_streams_through_a_toy_upstream(base: str) -> None:
    client = openai.OpenAI(base_url=base + "/v1", api_key="sk-client", max_retries=0)
    stream = client.chat.completions.create(
        model="loop/local/echo",
        messages=[{"role": "user", "content": MESSAGE}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == MESSAGE
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6


def test_a_toy_client_through_a_toy_upstream_is_passed_through(base: str) -> None:
    frames = _toy_stream(base, "/toy/v1/generate", "loop/local/echo")
    assert "".join(f["piece"] for f in frames if isinstance(f, dict) and "piece" in f) == MESSAGE
    assert frames[-1] == "[END]"


def test_a_toy_answer_not_streamed_is_the_fold_of_the_stream(base: str) -> None:
    body = {"engine": "loop/local/echo", "turns": [{"who": "user", "say": MESSAGE}]}
    response = httpx.post(base + "/toy/v1/generate", json=body, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["said"] == MESSAGE and answer["halt"] == "stop"
    fold = Fold()
    fold.extend(TOY.decode_body(answer) if TOY.decode_body else [])
    assert fold.ordered_choices()[0].text == MESSAGE


def test_toy_routes_answer_in_the_toy_shape(base: str) -> None:
    for path in ("/toy/v1/engines", "/v1/engines"):
        assert "local/echo" in httpx.get(base + path).json()["engines"]
    missing = httpx.post(base + "/toy/v1/generate", json={"turns": []})
    assert missing.status_code == 400
    assert missing.json() == {"trouble": {"what": "invalid_request", "why": "'engine' is required"}}
    unknown = httpx.get(base + "/toy/v1/nothing-here")
    assert unknown.status_code == 404 and set(unknown.json()) == {"trouble"}
    # the built-in protocols are where they were
    assert httpx.get(base + "/v1/models").json()["object"] == "list"
