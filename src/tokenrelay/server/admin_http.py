"""What every ``/admin/…`` route shares: the master-key gate, JSON errors and time query
parameters (the pieces of the OpenAPI documents are in ``admin_schema``).

``admin.py`` (keys and usage) and ``admin_stats.py`` (the dashboard's series) both
build on this module and on nothing of each other's, so the two stay free of a cycle.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from datetime import datetime

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..store import DRIVER_ERRORS, Store
from ..store.auth import credential
from .admin_schema import ErrorBody, ErrorDetail, parse_time

Handler = Callable[[Request], Awaitable[Response]]

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]
"""Every route answers every method, so a wrong one gets a JSON 405 with ``Allow``."""

_encode = msgspec.json.Encoder().encode


def json_response(
    body: msgspec.Struct, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(_encode(body), status, headers, media_type="application/json")


def error_response(
    status: int,
    message: str,
    kind: str,
    code: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """An OpenAI-shaped error: ``{"error": {"message", "type", "param", "code"}}``."""
    detail = ErrorDetail(message=message, type=kind, param=param, code=code)
    return json_response(ErrorBody(error=detail), status, headers)


def bad_request(message: str, param: str | None = None) -> Response:
    return error_response(400, message, "invalid_request_error", "invalid_request", param)


def time_param(request: Request, name: str) -> datetime | Response | None:
    """The query parameter ``name`` as a time (see ``parse_time``), or a 400 response."""
    try:
        return parse_time(request.query_params.get(name))
    except ValueError:
        return bad_request(
            f"{name} must be YYYY-MM-DD, an RFC 3339 date-time, or like 7d or 24h.", name
        )


class AdminGate:
    """The master-key check and the store every admin route reads. ``store`` may be
    attached later: until then guarded routes answer 503. Without a master key they
    answer 403."""

    def __init__(self, store: Store | None, master_key: str | None) -> None:
        self.store = store
        self._master = hashlib.sha256(master_key.encode()).digest() if master_key else None

    def dispatch(self, handlers: dict[str, Handler], auth: bool) -> Handler:
        """One endpoint for a path: ``handlers`` by method (HEAD runs GET), 404 when
        there are none, 405 with ``Allow`` for another method, the master key checked
        when ``auth``, and a database outage answered 503 with ``Retry-After``."""
        allowed = sorted({*handlers, *(["HEAD"] if "GET" in handlers else [])})

        async def endpoint(request: Request) -> Response:
            if not handlers:
                return error_response(
                    404, f"No admin route {request.url.path}.", "invalid_request_error", "not_found"
                )
            method = "GET" if request.method == "HEAD" else request.method
            handler = handlers.get(method)
            if handler is None:
                return error_response(
                    405,
                    f"Method {request.method} is not allowed here.",
                    "invalid_request_error",
                    "method_not_allowed",
                    headers={"Allow": ", ".join(allowed)},
                )
            if auth:
                denied = self._authorize(request)
                if denied is not None:
                    return denied
                if self.store is None:
                    return error_response(
                        503, "The store is not ready.", "server_error", "unavailable"
                    )
            try:
                return await handler(request)
            except DRIVER_ERRORS:
                return error_response(
                    503,
                    "The database is unavailable; try again shortly.",
                    "server_error",
                    "database_unavailable",
                    headers={"Retry-After": "1"},
                )

        return endpoint

    def _authorize(self, request: Request) -> Response | None:
        if self._master is None:
            return error_response(
                403,
                "The admin API is disabled: no master key is configured.",
                "permission_error",
                "admin_disabled",
            )
        secret = credential(request.headers)
        given = hashlib.sha256((secret or "").encode()).digest()
        if secret is None or not hmac.compare_digest(given, self._master):
            return error_response(
                401,
                "The admin API needs the master key.",
                "authentication_error",
                "invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return None

    def ready_store(self) -> Store:
        """The store, in a handler that ``dispatch`` has guarded."""
        assert self.store is not None  # checked by the dispatcher
        return self.store
