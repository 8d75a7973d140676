"""The Python SDK of tokenrelay: ``AsyncClient`` and its derived sync twin ``Client``.

::

    from tokenrelay.client import Client

    with Client("http://127.0.0.1:8000/v1") as client:
        with client.chat.stream(model="local/echo", messages=[{"role": "user", "content": "hi"}]) as s:
            for piece in s.text():
                print(piece, end="", flush=True)
            print(s.final().usage)

A stream yields the canonical events of ``tokenrelay.events`` (``Start``,
``TextDelta``, ``ReasoningDelta``, ``ToolCallDelta``, ``Finish``, ``Usage``); an error
frame is raised as a typed ``APIError``. ``final()`` and ``chat.create()`` return a
``ChatResult`` built by the gateway's own ``Fold``. Before the first byte, failures
are retried (``Retry``); after it, a dropped connection re-attaches to the gateway's
stream with ``Last-Event-ID``; stopping early cancels the stream on the gateway.
Against a plain OpenAI-compatible server (no ``X-Stream-Id``) there is no resume and
no cancel call. See ``stream.py`` for the life of a stream and ``sync.py`` for how the
sync client is derived.
"""

from ..events import Event, Finish, ReasoningDelta, Start, TextDelta, ToolCallDelta, Usage
from .aio import DEFAULT_BASE_URL, AsyncChat, AsyncClient
from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTooLargeError,
    UnprocessableEntityError,
)
from .options import Retry, Timeouts
from .result import ChatResult, Choice, ToolCall
from .stream import AsyncChatStream
from .sync import ChatStream, Client, SyncChat

__all__ = [
    "DEFAULT_BASE_URL",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncChat",
    "AsyncChatStream",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "ChatResult",
    "ChatStream",
    "Choice",
    "Client",
    "ConflictError",
    "Event",
    "Finish",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ReasoningDelta",
    "RequestTooLargeError",
    "Retry",
    "Start",
    "SyncChat",
    "TextDelta",
    "Timeouts",
    "ToolCall",
    "ToolCallDelta",
    "UnprocessableEntityError",
    "Usage",
]
