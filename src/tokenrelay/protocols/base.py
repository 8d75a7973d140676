"""What a protocol codec provides. A protocol is one module in this package; adding one
changes nothing else.

Two roles, either or both per protocol:

- client side (the gateway is the server): wire request -> ``ChatRequest``, canonical
  events -> wire bytes, the fold -> a non-streaming body, errors in the wire's shape;
- upstream side (the gateway is the client): ``ChatRequest`` -> wire request, wire
  frames -> canonical events, an upstream error body -> ``GatewayError``.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..events import ChatRequest, Error, Event, GatewayError
from ..fold import Fold, Tally
from ..sse import ServerSentEvent


class StreamDecoder(Protocol):
    """Upstream frames -> canonical events, one frame at a time."""

    def feed(self, frame: ServerSentEvent) -> list[Event]: ...

    def close(self) -> list[Event]:
        """End of the upstream body: an ``Error`` if the stream ended unfinished."""
        ...


class StreamEncoder(Protocol):
    """Canonical events -> the client's wire frames (each a whole SSE event). ``ended`` turns
    true once the stream is over (an error frame or the trailer was written)."""

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
    payloads()``: a protocol whose frames carry nothing but data)."""

    ended: bool
    payloads: bool

    def encode(self, frames: list[Any]) -> list[bytes]: ...

    def close(self, cancelled: bool = False) -> list[bytes]: ...

    def fail(self, error: Error) -> list[bytes]: ...


class InBandEnd:
    """How every encoder and passthrough ends a stream with an error once the response
    has started: one error frame in its wire's shape, at most once. Subclasses set
    ``_error_frame`` to their protocol's frame builder."""

    ended: bool
    tally: Tally

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

    def decode_request(self, body: Any) -> ChatRequest: ...

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
