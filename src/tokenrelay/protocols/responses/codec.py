"""The OpenAI Responses protocol (``POST /v1/responses``), both roles. Stored state
(``store``, ``previous_response_id``, background mode) is ``state.py`` and the server's
``stored.py``; these codecs set ``Tally.final`` (the final ``response`` object) for it.

Client side: Responses clients (the official SDK's ``responses.create`` /
``responses.stream``, and everything built on them) are served from the canon. Upstream
side (``protocol: openai-responses``): a Responses endpoint is called from the canon,
stateless. The request codec is in ``request.py`` (wire -> canon) and ``translate.py``
(canon -> wire, with ``DROPPED``); the stream codecs in ``encoder.py`` (canon -> wire),
``decoder.py`` (wire -> canon) and ``passthrough.py`` (same protocol); the
non-streaming body in ``body.py``; the shared vocabulary in ``wire.py``. This module is
the surface a protocol module must have (see ``protocols/base.py``).
"""

from __future__ import annotations

from ...events import ChatRequest, Error, GatewayError
from ...fold import Tally
from ..openai import codec as _openai
from .body import encode_response
from .decoder import ResponsesStreamDecoder
from .encoder import ResponsesStreamEncoder
from .passthrough import ResponsesPassthrough
from .request import decode_request
from .translate import DROPPED, encode_request
from .wire import error_body as _error_body
from .wire import error_event, name

__all__ = [
    "DROPPED",
    "FORWARDED_HEADERS",
    "decode_error",
    "decode_request",
    "encode_request",
    "encode_response",
    "error_body",
    "error_frame",
    "headers",
    "name",
    "passthrough",
    "stream_decoder",
    "stream_encoder",
    "url",
]

# None: OpenAI's own headers (OpenAI-Organization, OpenAI-Project) name the account,
# which is the gateway's, not the client's.
FORWARDED_HEADERS: tuple[str, ...] = ()


# --- client side ----------------------------------------------------------------------


def stream_encoder(request: ChatRequest, model: str, tally: Tally) -> ResponsesStreamEncoder:
    """Canonical events -> a Responses stream; ``model`` is the name the client asked for."""
    return ResponsesStreamEncoder(model, request, tally)


def passthrough(request: ChatRequest, model: str, tally: Tally) -> ResponsesPassthrough:
    """A Responses upstream's events, forwarded as written (``model`` rewritten)."""
    return ResponsesPassthrough(model, tally, request)


def error_body(error: GatewayError) -> dict[str, object]:
    """The OpenAI error shape, which the Responses API shares."""
    return _error_body(error.kind, error.message, error.code, error.param)


def error_frame(error: Error) -> bytes:
    """The in-stream ``error`` event (for a stream whose encoder is gone)."""
    return error_event(error, 0)


# --- upstream side --------------------------------------------------------------------


def url(base_url: str, model: str, stream: bool) -> str:
    """``base_url`` ends at the API version: ``https://api.openai.com/v1``."""
    return base_url.rstrip("/") + "/responses"


def headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def stream_decoder() -> ResponsesStreamDecoder:
    return ResponsesStreamDecoder()


def decode_error(status: int, body: bytes) -> GatewayError:
    """An upstream's error response: the OpenAI error shape, status kept."""
    return _openai.decode_error(status, body)
