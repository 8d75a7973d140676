"""Typed errors of the SDK.

Every failure the SDK raises is an ``APIError``. A refusal by the server
(an HTTP error status) is an ``APIStatusError`` subclass chosen by the status; an
error the server sent inside a stream that had already begun is the same class, chosen
by the error's type, with ``in_stream`` set. Network failures are
``APIConnectionError``; a limit of ``Timeouts`` running out is ``APITimeoutError``.

Both wire shapes are read the same way: OpenAI's
``{"error": {"message", "type", "param", "code"}}`` and Anthropic's
``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "UnprocessableEntityError",
]


class APIError(Exception):
    """Base of every SDK error. ``request_id`` is the server's ``x-request-id``;
    ``retry_after`` the server's hint in seconds (``Retry-After``), if it gave one."""

    retry_after: float | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.request_id = request_id
        self.body = body

    def __str__(self) -> str:
        head = f"{self.status} " if self.status is not None else ""
        tail = f" (request {self.request_id})" if self.request_id else ""
        return f"{head}{self.message}{tail}"


class APIConnectionError(APIError):
    """The server could not be reached, or the connection broke and could not be
    resumed."""


class APITimeoutError(APIConnectionError):
    """A limit ran out; ``code`` says which: ``connect_timeout``,
    ``first_token_timeout``, ``idle_timeout`` or ``total_timeout``."""


class APIStatusError(APIError):
    """The server answered with an error. ``in_stream``: it came as an error frame in a
    stream that had already started (``status`` is then the one its type stands for)."""

    in_stream: bool = False


class BadRequestError(APIStatusError):
    """400: the request is invalid (``param`` names the field when known)."""


class AuthenticationError(APIStatusError):
    """401: the key is missing or wrong."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not do this."""


class NotFoundError(APIStatusError):
    """404: no such model, route or stream."""


class ConflictError(APIStatusError):
    """409."""


class RequestTooLargeError(APIStatusError):
    """413: the request body is over the server's limit."""


class UnprocessableEntityError(APIStatusError):
    """422."""


class RateLimitError(APIStatusError):
    """429: slow down (see ``retry_after``)."""


class InternalServerError(APIStatusError):
    """5xx: the server or the model behind it failed."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: RequestTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}

# The status an error type stands for, for errors that arrive inside a stream.
_TYPE_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "timeout_error": 504,
    "upstream_error": 502,
    "overloaded_error": 529,
    "api_error": 500,
    "server_error": 500,
}


def status_error(
    status: int,
    body: Any,
    *,
    request_id: str | None = None,
    retry_after: float | None = None,
    in_stream: bool = False,
) -> APIStatusError:
    """The typed error for an error ``body`` (decoded JSON, or anything else)."""
    error = body.get("error") if isinstance(body, dict) else None
    message = type_ = code = param = None
    if isinstance(error, dict):
        message, type_ = error.get("message"), error.get("type")
        code, param = error.get("code"), error.get("param")
    elif isinstance(error, str):
        message = error
    cls = _BY_STATUS.get(status, InternalServerError if status >= 500 else APIStatusError)
    exc = cls(
        str(message or f"HTTP {status}"),
        status=status,
        type=str(type_) if type_ is not None else None,
        code=str(code) if code is not None else None,
        param=str(param) if param is not None else None,
        request_id=request_id,
        body=body,
    )
    exc.in_stream = in_stream
    exc.retry_after = retry_after
    return exc


def response_error(
    status: int, content: bytes, request_id: str | None, retry_after: float | None
) -> APIStatusError:
    """The typed error for an HTTP error response."""
    try:
        body: Any = msgspec.json.decode(content)
    except msgspec.DecodeError:
        body = {"error": content[:500].decode("utf-8", "replace").strip() or None}
    return status_error(status, body, request_id=request_id, retry_after=retry_after)


def frame_error(
    data: str, fallback: str, code: str | None, request_id: str | None
) -> APIStatusError:
    """The typed error for an in-stream error frame's data (either wire's shape);
    ``fallback`` and ``code`` describe a frame that is not an error object at all."""
    try:
        body: Any = msgspec.json.decode(data)
    except msgspec.DecodeError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        body = {"error": {"message": fallback, "type": "api_error", "code": code}}
        error = body["error"]
    type_ = error.get("type")
    status = _TYPE_STATUS.get(type_, 500) if isinstance(type_, str) else 500
    return status_error(status, body, request_id=request_id, in_stream=True)
