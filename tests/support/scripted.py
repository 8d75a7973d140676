"""A scripted provider, for in-process tests of the relay core (what httpx's
``MockTransport`` is to httpx): each ``open()`` takes the next ``Script`` of its list
and acts it out, with no socket and no subprocess. A ``Gateway`` is built around it
(``gateway()``) from the real parts (router, attempts, hub, accounts in open mode), and
``call()`` runs one request through ``Gateway.chat`` and the ASGI response it returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.datastructures import Headers

from tokenrelay.affinity import Conversation
from tokenrelay.config import Config, RetryConfig, StreamsConfig
from tokenrelay.events import ChatRequest, Event, Finish, GatewayError, Start, TextDelta, Usage
from tokenrelay.metrics import Metrics
from tokenrelay.protocols.registry import REGISTRY
from tokenrelay.router import ModelSpec, Router, Timeouts
from tokenrelay.server.accounts import Accounts
from tokenrelay.server.app import served_names
from tokenrelay.server.relay import Gateway
from tokenrelay.sse import ServerSentEvent, SSEDecoder
from tokenrelay.streams.hub import HubSettings, StreamHub


@dataclass(frozen=True)
class Pause:
    """Nothing for ``seconds`` (``None``: until closed or cancelled)."""

    seconds: float | None = None


@dataclass(frozen=True)
class Fail:
    """The upstream fails mid-stream with ``error``."""

    error: GatewayError


Step = list[Event] | Pause | Fail  # one network read's events, a silence, or a failure


@dataclass
class Script:
    """One attempt: ``open()`` waits ``stall`` seconds (``hang``: until cancelled), then
    is refused with ``refuse`` or answers, streaming ``steps``."""

    steps: list[Step] = field(default_factory=list)
    refuse: GatewayError | None = None
    stall: float = 0.0
    hang: bool = False


def answer(*texts: str, reason: str = "stop", usage: Usage | None = None) -> Script:
    """A whole answer: a start, one read per text, the finish and usage."""
    steps: list[Step] = [
        [Start("up_1", "m"), TextDelta(texts[0])] if texts else [Start("up_1", "m")]
    ]
    steps += [[TextDelta(t)] for t in texts[1:]]
    steps.append([Finish(reason), usage or Usage(input=3, output=len(texts))])
    return Script(steps)


def refused(status: int, message: str = "no", headers: dict[str, str] | None = None) -> Script:
    kind = "rate_limit" if status == 429 else "upstream" if status >= 500 else "invalid_request"
    return Script(refuse=GatewayError(kind, message, status, headers=headers))


class ScriptedUpstream:
    protocol: str | None = None  # events only: the client's encoder makes the frames

    def __init__(self, provider: ScriptedProvider, steps: list[Step]) -> None:
        self._provider = provider
        self._steps = steps
        self.closed = False

    async def frames(self) -> AsyncIterator[list[ServerSentEvent]]:
        raise NotImplementedError
        yield []  # pragma: no cover

    async def payloads(self) -> AsyncIterator[list[bytes]]:
        raise NotImplementedError
        yield []  # pragma: no cover

    async def events(self) -> AsyncIterator[list[Event]]:
        for step in self._steps:
            if self.closed:
                return
            if isinstance(step, Pause):
                await asyncio.sleep(step.seconds if step.seconds is not None else 3600)
            elif isinstance(step, Fail):
                raise step.error
            else:
                self._provider.sent += 1
                yield step

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self._provider.closed += 1


class ScriptedProvider:
    """A provider named ``name`` serving ``models``, acting out ``scripts`` in order."""

    def __init__(self, name: str, scripts: list[Script], models: list[str] | None = None) -> None:
        self.name = name
        self.scripts = list(scripts)
        self._models = models or ["m"]
        self.opened = 0  # open() calls: requests sent
        self.closed = 0  # upstreams closed
        self.sent = 0  # reads delivered
        self.requests: list[tuple[str, ChatRequest]] = []

    def models(self) -> list[str]:
        return self._models

    async def open(
        self, request: ChatRequest, model: str, conversation: Conversation | None = None
    ) -> ScriptedUpstream:
        self.opened += 1
        self.requests.append((model, request))
        if not self.scripts:
            raise AssertionError(f"{self.name}: no script left for attempt {self.opened}")
        script = self.scripts.pop(0)
        if script.hang or script.stall:
            await asyncio.sleep(3600 if script.hang else script.stall)
        if script.refuse is not None:
            raise script.refuse
        return ScriptedUpstream(self, script.steps)

    async def aclose(self) -> None:
        return None


def gateway(
    providers: list[ScriptedProvider],
    models: dict[str, ModelSpec] | None = None,
    timeouts: Timeouts | None = None,
    keepalive: float = 30.0,
    grace: float = 10.0,
    max_attempts: int = 4,
    breaker: tuple[int, float] = (5, 30.0),
) -> Gateway:
    """A gateway over ``providers`` (each with ``timeouts``), no backoff between attempts."""
    config = Config(
        env_providers=False,
        keepalive_interval=keepalive,
        retries=RetryConfig(max_attempts=max_attempts, backoff_base=0.0, backoff_max=0.0),
        streams=StreamsConfig(grace=grace),
    )
    per = {p.name: timeouts for p in providers if timeouts is not None}
    router = Router(list(providers), per, models, breaker)
    s = config.streams
    hub = StreamHub(HubSettings(s.grace, s.retention, s.max_stream_bytes, s.max_total_bytes))
    metrics = Metrics()
    metrics.name(*served_names(config, router))
    return Gateway(config, router, hub, metrics, Accounts(config))


def outcomes(gw: Gateway) -> dict[str, float]:
    """Requests ended so far, by outcome (the ``tokenrelay_requests`` counter)."""
    out: dict[str, float] = {}
    for family in gw.metrics.registry.collect():
        if family.name != "tokenrelay_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                outcome = sample.labels["outcome"]
                out[outcome] = out.get(outcome, 0) + sample.value
    return out


@dataclass
class Reply:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def events(self) -> list[ServerSentEvent]:
        decoder = SSEDecoder()
        return [*decoder.feed(self.body), *decoder.flush()]

    def data(self) -> list[Any]:
        """The data of each SSE event (JSON decoded; ``[DONE]`` as is)."""
        out: list[Any] = []
        for e in self.events():
            out.append(e.data if e.data == "[DONE]" else msgspec.json.decode(e.data))
        return out

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


class Client:
    """One request's side of the ASGI exchange: its body, then ``http.disconnect`` once
    ``leave()`` is called (or the response is complete)."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = msgspec.json.encode(body)
        self.gone = asyncio.Event()
        self.reply = Reply()
        self._sent_body = False
        self.on_body: Callable[[bytes], None] | None = None

    def leave(self) -> None:
        self.gone.set()

    async def receive(self) -> dict[str, Any]:
        if not self._sent_body:
            self._sent_body = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.reply.status = message["status"]
            self.reply.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            self.reply.body += message.get("body", b"")
            if self.on_body is not None:
                self.on_body(message.get("body", b""))
            if not message.get("more_body", False):
                self.gone.set()


async def call(
    gw: Gateway,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
    client: Client | None = None,
    protocol: str = "openai",
) -> Reply:
    """``body`` through ``Gateway.chat`` and the response it gives (in this task)."""
    client = client or Client(body)
    raw = {"content-type": "application/json", **(headers or {})}
    pairs = [(k.encode(), v.encode()) for k, v in raw.items()]
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": pairs,
    }
    app = await gw.chat(REGISTRY.client(protocol), client.receive, Headers(raw=pairs))
    await app(scope, client.receive, client.send)
    return client.reply
