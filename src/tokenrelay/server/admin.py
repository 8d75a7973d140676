"""The admin API: keys and usage, behind the master key, with its OpenAPI document.

    POST /admin/keys                 create a key (the secret is in this response only)
    GET  /admin/keys                 list keys (``include_revoked=true`` for all)
    POST /admin/keys/{key_id}/revoke revoke (idempotent)
    POST /admin/keys/{key_id}/rotate new secret, same key
    GET  /admin/usage                totals ``by`` key, model or day, ``since`` a time
    GET  /admin/openapi.json         this API's OpenAPI 3.1 document (no key needed)

The master key goes in ``Authorization: Bearer`` or ``x-api-key``. Without a configured
master key the API answers 403. Errors are OpenAI-shaped JSON. Request bodies are
decoded into the structs of ``admin_schema``, whose JSON Schema is the published one.
Every path under ``/admin/`` answers JSON, including 404 and 405 (with ``Allow``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..numbers import decimal
from ..store import DRIVER_ERRORS, ApiKey, KeyNotFound, KeyRevoked, KeySpec, Store
from ..store.auth import credential
from .admin_schema import (
    CreateKey,
    ErrorBody,
    ErrorDetail,
    Key,
    KeyList,
    NewKey,
    UsageGroup,
    UsageReport,
    openapi_document,
    parse_time,
)

_encode = msgspec.json.Encoder().encode
_INTEGERS = ("rpm", "tpm", "max_concurrent")


def _decode_create(body: bytes) -> CreateKey:
    """Decode with JSON Schema's idea of an integer: ``5.0`` is one (``5.5`` is not)."""
    raw = msgspec.json.decode(body)
    if isinstance(raw, dict):
        for name in _INTEGERS:
            value = raw.get(name)
            if isinstance(value, float) and value.is_integer():
                raw[name] = int(value)
    return msgspec.convert(raw, CreateKey)


_PARAM = re.compile(r"at `\$\.([A-Za-z_]+)")
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None else None


def key_out(key: ApiKey) -> Key:
    return Key(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        models=key.models,
        rpm=key.rpm,
        tpm=key.tpm,
        max_concurrent=key.max_concurrent,
        budget_usd=key.budget_usd,
        budget_period=key.budget_period,
        expires_at=_aware(key.expires_at),
        created_at=key.created_at.replace(tzinfo=UTC),
        revoked_at=_aware(key.revoked_at),
        status=key.status(),  # type: ignore[arg-type]
    )


def _json(
    body: msgspec.Struct, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(_encode(body), status, headers, media_type="application/json")


def _error(
    status: int,
    message: str,
    kind: str,
    code: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    detail = ErrorDetail(message=message, type=kind, param=param, code=code)
    return _json(ErrorBody(error=detail), status, headers)


def _bad(message: str, param: str | None = None) -> Response:
    return _error(400, message, "invalid_request_error", "invalid_request", param)


Handler = Callable[[Request], Awaitable[Response]]


class AdminAPI:
    """The admin routes over ``store`` (which may be attached later: until then they
    answer 503). ``on_change`` runs after a revoke or rotate, e.g. to drop an
    ``Authenticator``'s cache. ``catch_all`` adds a last route answering JSON 404 for
    any other ``/admin/…`` path: turn it off, or mount other ``/admin/…`` routes (the
    dashboard) before these, when the application serves more under ``/admin/``."""

    def __init__(
        self,
        store: Store | None,
        master_key: str | None,
        *,
        on_change: Callable[[], None] | None = None,
        max_body: int = 4 * 1024 * 1024,
        catch_all: bool = True,
    ) -> None:
        self.store = store
        self.catch_all = catch_all
        self._master = hashlib.sha256(master_key.encode()).digest() if master_key else None
        self.on_change = on_change
        self.max_body = max_body

    @property
    def routes(self) -> list[Route]:
        """Starlette routes to mount at the application's root."""
        table: list[tuple[str, dict[str, Handler], bool]] = [
            ("/admin/openapi.json", {"GET": self.openapi}, False),
            ("/admin/keys", {"GET": self.list_keys, "POST": self.create_key}, True),
            ("/admin/keys/{key_id}/revoke", {"POST": self.revoke_key}, True),
            ("/admin/keys/{key_id}/rotate", {"POST": self.rotate_key}, True),
            ("/admin/usage", {"GET": self.usage}, True),
        ]
        if self.catch_all:
            table.append(("/admin/{path:path}", {}, True))
        return [Route(path, self._dispatch(h, auth), methods=_METHODS) for path, h, auth in table]

    def _dispatch(self, handlers: dict[str, Handler], auth: bool) -> Handler:
        allowed = sorted({*handlers, *(["HEAD"] if "GET" in handlers else [])})

        async def endpoint(request: Request) -> Response:
            if not handlers:
                return _error(
                    404, f"No admin route {request.url.path}.", "invalid_request_error", "not_found"
                )
            method = "GET" if request.method == "HEAD" else request.method
            handler = handlers.get(method)
            if handler is None:
                return _error(
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
                    return _error(503, "The store is not ready.", "server_error", "unavailable")
            try:
                return await handler(request)
            except DRIVER_ERRORS:
                return _error(
                    503,
                    "The database is unavailable; try again shortly.",
                    "server_error",
                    "database_unavailable",
                    headers={"Retry-After": "1"},
                )

        return endpoint

    def _authorize(self, request: Request) -> Response | None:
        if self._master is None:
            return _error(
                403,
                "The admin API is disabled: no master key is configured.",
                "permission_error",
                "admin_disabled",
            )
        secret = credential(request.headers)
        given = hashlib.sha256((secret or "").encode()).digest()
        if secret is None or not hmac.compare_digest(given, self._master):
            return _error(
                401,
                "The admin API needs the master key.",
                "authentication_error",
                "invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return None

    def _store(self) -> Store:
        assert self.store is not None  # checked by the dispatcher
        return self.store

    async def _body(self, request: Request) -> bytes | Response:
        declared = decimal(request.headers.get("content-length"))
        if declared is not None and declared > self.max_body:
            return _error(
                413,
                f"The body is larger than {self.max_body} bytes.",
                "invalid_request_error",
                "request_too_large",
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                return _error(
                    413,
                    f"The body is larger than {self.max_body} bytes.",
                    "invalid_request_error",
                    "request_too_large",
                )
            chunks.append(chunk)
        return b"".join(chunks)

    # --- handlers ---------------------------------------------------------------------

    async def openapi(self, request: Request) -> Response:
        from .admin_stats import merge_openapi  # admin_stats imports this module

        document = merge_openapi(openapi_document())
        return Response(_encode(document), media_type="application/json")

    async def create_key(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        try:
            given = _decode_create(body)
        except msgspec.ValidationError as exc:
            found = _PARAM.search(str(exc))
            return _bad(f"Invalid request body: {exc}", found.group(1) if found else None)
        except msgspec.DecodeError as exc:
            return _bad(f"The request body is not valid JSON: {exc}")
        except RecursionError:
            return _bad("The request body is nested too deeply.")
        try:
            spec = KeySpec(
                name=given.name,
                models=given.models,
                rpm=given.rpm,
                tpm=given.tpm,
                max_concurrent=given.max_concurrent,
                budget_usd=given.budget_usd,
                budget_period=given.budget_period,
                expires_at=given.expires_at,
            )
        except ValueError as exc:
            return _bad(str(exc), str(exc).split(":", 1)[0])
        created = await self._store().create_key(spec)
        return _json(NewKey(key=key_out(created.key), secret=created.secret), 201)

    async def list_keys(self, request: Request) -> Response:
        flag = request.query_params.get("include_revoked", "false")
        if flag not in ("true", "false"):
            return _bad("include_revoked must be true or false.", "include_revoked")
        keys = await self._store().list_keys(include_revoked=flag == "true")
        return _json(KeyList(data=[key_out(k) for k in keys]))

    async def revoke_key(self, request: Request) -> Response:
        key_id = request.path_params["key_id"]
        try:
            key = await self._store().revoke_key(key_id)
        except KeyNotFound:
            return _error(404, f"No key {key_id!r}.", "invalid_request_error", "key_not_found")
        self._changed()
        return _json(key_out(key))

    async def rotate_key(self, request: Request) -> Response:
        key_id = request.path_params["key_id"]
        try:
            created = await self._store().rotate_key(key_id)
        except KeyNotFound:
            return _error(404, f"No key {key_id!r}.", "invalid_request_error", "key_not_found")
        except KeyRevoked:
            return _error(
                409,
                f"The key {key_id!r} is revoked; create a new one.",
                "invalid_request_error",
                "key_revoked",
            )
        self._changed()
        return _json(NewKey(key=key_out(created.key), secret=created.secret))

    async def usage(self, request: Request) -> Response:
        by = request.query_params.get("by", "key")
        if by not in ("key", "model", "day"):
            return _bad("by must be key, model or day.", "by")
        try:
            since = parse_time(request.query_params.get("since"))
        except ValueError:
            return _bad(
                "since must be YYYY-MM-DD, an RFC 3339 date-time, or like 7d or 24h.", "since"
            )
        rows = await self._store().usage_report(by, since)
        data = [msgspec.convert({"name": None, **row}, UsageGroup) for row in rows]
        return _json(UsageReport(by=by, since=_aware(since), data=data))  # type: ignore[arg-type]

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


def admin_routes(store: Store | None, master_key: str | None, **options: Any) -> list[Route]:
    """Shorthand for ``AdminAPI(store, master_key, **options).routes``."""
    return AdminAPI(store, master_key, **options).routes
