"""What a protocol provides. A protocol is one subpackage of this package whose
``__init__`` declares a ``PROTOCOL`` (a ``Protocol`` descriptor, below); ``registry.py``
lists them, and everything else (routes, config, the SDK, the translation table) reads
the registry.

Two roles, either or both per protocol, each a codec module (``codec.py``):

- client side (the gateway is the server): wire request -> ``ChatRequest``, canonical
  events -> wire bytes, the fold -> a non-streaming body, errors in the wire's shape;
- upstream side (the gateway is the client): ``ChatRequest`` -> wire request, wire
  frames -> canonical events, an upstream error body -> ``GatewayError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ..embeddings import EmbeddingAnswer, EmbeddingRequest
from ..events import ChatRequest, Error, Event, GatewayError
from ..fold import Fold, Tally
from ..sse import ServerSentEvent

MALFORMED = Error("upstream", "the upstream sent a malformed frame", 502, "upstream_malformed")
"""What every stream decoder reports for a frame it cannot read."""
TRUNCATED = Error(
    "upstream", "the upstream closed the stream before it finished", 502, "upstream_truncated"
)
"""What every stream decoder reports for a body that ended before the stream did."""


def bearer(api_key: str | None) -> dict[str, str]:
    """``Authorization: Bearer <key>``, the auth header of OpenAI-style wires (none
    without a key)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class StreamDecoder(Protocol):
    """Upstream frames -> canonical events, one frame at a time; ``done`` once the
    wire's end marker was seen."""

    @property
    def done(self) -> bool: ...

    def feed(self, frame: ServerSentEvent) -> list[Event]: ...

    def close(self) -> list[Event]:
        """End of the upstream body: an ``Error`` if the stream ended unfinished."""
        ...


class StreamEncoder(Protocol):
    """Canonical events -> the client's wire frames. The contract of every encoder and
    passthrough: each item of a returned list is exactly one whole SSE event (the hub
    numbers items, one ``id:`` each, without parsing them). ``ended`` turns true once
    the stream is over (an error frame or the trailer was written)."""

    ended: bool

    def encode(self, events: list[Event]) -> list[bytes]: ...

    def close(self, cancelled: bool = False) -> list[bytes]:
        """The trailer of a finished stream (usage frame, end marker); ``cancelled``
        when the user stopped it: open parts are closed properly first."""
        ...

    def fail(self, error: Error) -> list[bytes]:
        """An in-band error frame that ends the stream."""
        ...


class FramePassthrough(Protocol):
    """Upstream frames -> client bytes when both speak the same protocol: frames are
    inspected, not rebuilt, so fields the canon does not know survive. ``encode`` takes
    ``ServerSentEvent``s, or with ``payloads`` set each frame's data bytes (``Upstream.
    payloads()``: a protocol whose frames carry nothing but data), or with ``named`` set
    each frame's ``(event name, data)`` bytes (``Upstream.named()``)."""

    ended: bool
    payloads: bool
    named: bool

    def encode(self, frames: list[Any]) -> list[bytes]: ...

    def close(self, cancelled: bool = False) -> list[bytes]: ...

    def fail(self, error: Error) -> list[bytes]: ...


class InBandEnd:
    """How every encoder and passthrough ends a stream with an error once the response
    has started: one error frame in its wire's shape, at most once. Subclasses set
    ``_error_frame`` to their protocol's frame builder."""

    ended: bool
    tally: Tally
    named = False  # a passthrough's encode() takes (event, data) bytes (FramePassthrough)

    @staticmethod
    def _error_frame(error: Error) -> bytes:
        raise NotImplementedError

    def fail(self, error: Error) -> list[bytes]:
        """End the stream with ``error`` in-band (the response has already started)."""
        if self.ended:
            return []
        self.ended = True
        self.tally.error = error
        return [self._error_frame(error)]


class ClientProtocol(Protocol):
    name: str
    # request headers of this protocol that reach an upstream of the same protocol
    FORWARDED_HEADERS: tuple[str, ...]

    def decode_request(self, body: Any, params: Mapping[str, str] | None = None) -> ChatRequest:
        """``params``: what the route's path and query say (``Route.params``), for a
        protocol whose URL carries part of the request (Gemini's model and method)."""
        ...

    def stream_encoder(self, request: ChatRequest, model: str, tally: Tally) -> StreamEncoder: ...

    def passthrough(self, request: ChatRequest, model: str, tally: Tally) -> FramePassthrough: ...

    def encode_response(self, fold: Fold, model: str) -> dict[str, Any]: ...

    def error_body(self, error: GatewayError) -> dict[str, Any]: ...

    def error_frame(self, error: Error) -> bytes: ...


class UpstreamProtocol(Protocol):
    name: str

    def url(self, base_url: str, model: str, stream: bool) -> str: ...

    def headers(self, api_key: str | None) -> dict[str, str]: ...

    def encode_request(self, request: ChatRequest, model: str) -> dict[str, Any]: ...

    def stream_decoder(self) -> StreamDecoder: ...

    def decode_error(self, status: int, body: bytes) -> GatewayError: ...


class EmbeddingWire(Protocol):
    """How an upstream of this protocol embeds (``POST /v1/embeddings``, not a stream):
    the URL, the body sent, the answer read (``embeddings.EmbeddingAnswer``), errors."""

    def url(self, base_url: str, model: str) -> str: ...

    def encode_request(self, request: EmbeddingRequest, model: str) -> bytes: ...

    def decode_answer(self, body: bytes, request: EmbeddingRequest) -> EmbeddingAnswer: ...

    def decode_error(self, status: int, body: bytes) -> GatewayError: ...


class EmbeddingClient(Protocol):
    """How clients of this protocol ask for embeddings (its ``embed`` routes): the body
    read into an ``EmbeddingRequest`` (``protocol`` set to this one, ``body`` as
    written), the answer written in this protocol's shape (``answer.raw`` is set only
    when the upstream speaks this protocol too: its body, passed through)."""

    def decode_request(self, body: Any, params: Mapping[str, str]) -> EmbeddingRequest: ...

    def encode_response(self, request: EmbeddingRequest, answer: EmbeddingAnswer) -> bytes: ...


class StateCodec(Protocol):
    """A client protocol whose answers the gateway keeps (the Responses API's ``store``
    and ``previous_response_id``): what to keep of a request and its final object, how
    a request continues a kept one, and the bodies of the state routes under ``path``
    (``GET`` / ``DELETE {path}/{id}``, ``GET {path}/{id}/input_items``, ``POST
    {path}/{id}/cancel``). Records are plain JSON; the store does not read them."""

    path: str

    def previous(self, body: dict[str, Any]) -> str | None:
        """The id of the kept answer this request continues, if any."""
        ...

    def continued(self, body: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
        """The request with the kept answer's history in front of its own input."""
        ...

    def keeps(self, body: dict[str, Any]) -> bool: ...

    def record(self, body: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
        """What is kept of a request (as continued) and its answer's final object."""
        ...

    def record_id(self, record: dict[str, Any]) -> str: ...

    def view(self, record: dict[str, Any]) -> dict[str, Any]:
        """The body of ``GET {path}/{id}``."""
        ...

    def input_items(self, record: dict[str, Any], query: Mapping[str, str]) -> dict[str, Any]: ...

    def deleted(self, id: str) -> dict[str, Any]: ...

    def not_found(self, id: str, param: str | None = None) -> GatewayError: ...

    # --- background mode (``server/background.py``) ---------------------------------

    def background(self, body: dict[str, Any]) -> bool:
        """The request asks to run in the background (a 400 if it cannot be kept)."""
        ...

    def pending(self, request: ChatRequest) -> dict[str, Any]:
        """The object of a new background answer (its id chosen here), not begun."""
        ...

    def is_background(self, record: dict[str, Any]) -> bool: ...

    def running(self, record: dict[str, Any]) -> bool:
        """A background answer not yet ended (its final record is still to come)."""
        ...

    def progress(self, record: dict[str, Any], begun: bool) -> dict[str, Any]:
        """The ``GET`` body of a running background answer (``begun``: it produces)."""
        ...

    def lost(self, record: dict[str, Any]) -> dict[str, Any]:
        """The ``GET`` body of a running answer that nobody produces any more."""
        ...

    def not_background(self, action: str) -> GatewayError: ...


@dataclass(frozen=True, slots=True)
class Route:
    """An ingress route of a client protocol: ``chat`` (POST, the streaming hot path),
    ``models`` (GET, the model list in the protocol's shape), ``model`` (GET, one
    model: ``model_info``), ``count`` (POST, a token count, ``server/count_tokens.py``)
    or ``embed`` (POST, embeddings, ``server/embeddings.py``: ``fixed`` is handed to the
    protocol's ``EmbeddingClient.decode_request`` with the path parameter).

    A path may hold one parameter as its last variable part, in Starlette's syntax
    (``/v1beta/models/{model:path}:generateContent``: the model name, slashes and all,
    between a fixed head and tail). Such a route hands the protocol's ``decode_request``
    its ``params``: the path parameter, the query's parameters and ``fixed`` (what the
    route itself says, e.g. ``method=streamGenerateContent``)."""

    kind: Literal["chat", "models", "model", "count", "embed"]
    path: str
    fixed: tuple[tuple[str, str], ...] = ()

    def template(self) -> tuple[str, str, str] | None:
        """``(head, parameter name, tail)`` of a path with a parameter, else ``None``."""
        if "{" not in self.path:
            return None
        head, _, rest = self.path.partition("{")
        inner, _, tail = rest.partition("}")
        return head, inner.partition(":")[0], tail


ModelList = Callable[[list[tuple[str, str]]], dict[str, Any]]
"""``[(model, owner), ...]`` -> the body of the protocol's model-list response."""

BodyDecoder = Callable[[Any], list[Event]]
"""A non-streaming response body -> the events of the stream it is the fold of."""

AuthHeaders = Callable[[str | None], dict[str, str]]
"""An API key -> the request headers that carry it (and the wire's version header)."""

ModelInfo = Callable[[str, str], dict[str, Any]]
"""``(model, owner)`` -> the body of the protocol's get-one-model response."""


@dataclass(frozen=True, slots=True)
class Translation:
    """What translation into this protocol drops or adjusts: ``(field, what, why)`` rows
    rendered into docs/translation.md by ``tables.py``."""

    title: str
    source: str
    rows: Iterable[tuple[str, str, str]]


@dataclass(frozen=True, slots=True)
class CostPlace:
    """Where this protocol's answers carry their cost when the client asks for it
    (README, "Prompt caching"): ``marker`` matches the data of every stream's final
    usage frame (a cheap test, so other frames are never parsed); ``final`` takes a
    frame's event name and JSON and gives the usage object the cost goes in (``None``:
    not the final usage frame); ``body`` is the key of the usage object in a
    non-streamed answer."""

    marker: re.Pattern[bytes]
    final: Callable[[str | None, Any], dict[str, Any] | None]
    body: str = "usage"


@dataclass(frozen=True, slots=True)
class ProtocolSpec:
    """Everything the rest of the gateway needs to know of one protocol.

    ``client`` is set when clients can speak it to the gateway, ``upstream`` when the
    gateway can call upstreams in it (often the same codec module). ``routes`` are its
    ingress routes; each is served at its path and again under ``prefix`` (with the
    gateway's own stream routes), where every answer, errors included, is in this
    protocol's shape. ``marker`` is a request header that asks for this protocol's
    shape on a shared route (``/v1/models``). ``credentials`` are request headers
    (beyond ``Authorization: Bearer`` and ``x-api-key``) in which this protocol's clients
    send the gateway key, ``key_param`` a query parameter that carries it (never logged:
    the access log shows paths without queries). ``event_ids`` False: this protocol's
    streams go out as bare ``data:`` frames, without ``id:`` lines or ``: ping``
    comments (Google's SDKs read any other line as JSON and fail)."""

    name: str
    client: ClientProtocol | None = None
    upstream: UpstreamProtocol | None = None
    routes: tuple[Route, ...] = ()
    prefix: str = ""
    marker: str | None = None
    model_list: ModelList | None = None
    model_info: ModelInfo | None = None
    auth: AuthHeaders = bearer
    credentials: tuple[str, ...] = ()
    key_param: str | None = None
    event_ids: bool = True
    decode_body: BodyDecoder | None = None
    translation: Translation | None = None
    # the provider recordings in this wire, as globs under shared/fixtures/streams/
    recordings: tuple[str, ...] = ()
    embeddings: EmbeddingWire | None = None  # its upstreams' embeddings endpoint, if any
    embed_client: EmbeddingClient | None = None  # its clients' embeddings (``embed`` routes)
    # (upstream protocol, endpoint): this protocol is an endpoint of that protocol's
    # providers (served where their ``endpoints`` list it), not a provider protocol
    endpoint_of: tuple[str, str] | None = None
    state: StateCodec | None = None
    cost: CostPlace | None = None  # where its answers carry their cost, when asked

    def paths(self, kind: str) -> list[str]:
        """The paths of this protocol's routes of ``kind``, plain and prefixed."""
        plain = [r.path for r in self.routes if r.kind == kind]
        return plain + [self.prefix + p for p in plain if self.prefix]
