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

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..limits.fields import COUNT_NAMES, LIMIT_NAMES
from ..numbers import decimal
from ..store import ApiKey, KeyNotFound, KeyRevoked, KeySpec, Store
from .admin_http import (
    METHODS,
    AdminGate,
    Handler,
    bad_request,
    error_response,
    json_response,
    time_param,
)
from .admin_schema import CreateKey, Key, KeyList, NewKey, UsageGroup, UsageReport, openapi_document
from .admin_stats import merge_openapi

_encode = msgspec.json.Encoder().encode


def _decode_create(body: bytes) -> dict[str, Any]:
    """Decode with JSON Schema's idea of an integer: ``5.0`` is one (``5.5`` is not)."""
    raw = msgspec.json.decode(body)
    if isinstance(raw, dict):
        for name in COUNT_NAMES:
            value = raw.get(name)
            if isinstance(value, float) and value.is_integer():
                raw[name] = int(value)
    return msgspec.structs.asdict(msgspec.convert(raw, CreateKey))


_PARAM = re.compile(r"at `\$\.([A-Za-z_]+)")


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None else None


def key_out(key: ApiKey) -> msgspec.Struct:
    """The API's ``Key`` for a stored key."""
    return Key(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        models=key.models,
        **{name: getattr(key, name) for name in LIMIT_NAMES},
        budget_period=key.budget_period,
        expires_at=_aware(key.expires_at),
        created_at=key.created_at.replace(tzinfo=UTC),
        revoked_at=_aware(key.revoked_at),
        status=key.status(),
    )


class AdminAPI(AdminGate):
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
        super().__init__(store, master_key)
        self.catch_all = catch_all
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
        return [Route(path, self.dispatch(h, auth), methods=METHODS) for path, h, auth in table]

    async def _body(self, request: Request) -> bytes | Response:
        declared = decimal(request.headers.get("content-length"))
        if declared is not None and declared > self.max_body:
            return error_response(
                413,
                f"The body is larger than {self.max_body} bytes.",
                "invalid_request_error",
                "request_too_large",
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                return error_response(
                    413,
                    f"The body is larger than {self.max_body} bytes.",
                    "invalid_request_error",
                    "request_too_large",
                )
            chunks.append(chunk)
        return b"".join(chunks)

    # --- handlers ---------------------------------------------------------------------

    async def openapi(self, request: Request) -> Response:
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
            return bad_request(f"Invalid request body: {exc}", found.group(1) if found else None)
        except msgspec.DecodeError as exc:
            return bad_request(f"The request body is not valid JSON: {exc}")
        except RecursionError:
            return bad_request("The request body is nested too deeply.")
        try:
            spec = KeySpec(**given)
        except ValueError as exc:
            return bad_request(str(exc), str(exc).split(":", 1)[0])
        created = await self.ready_store().create_key(spec)
        return json_response(NewKey(key=key_out(created.key), secret=created.secret), 201)

    async def list_keys(self, request: Request) -> Response:
        flag = request.query_params.get("include_revoked", "false")
        if flag not in ("true", "false"):
            return bad_request("include_revoked must be true or false.", "include_revoked")
        keys = await self.ready_store().list_keys(include_revoked=flag == "true")
        return json_response(KeyList(data=[key_out(k) for k in keys]))

    async def revoke_key(self, request: Request) -> Response:
        key_id = request.path_params["key_id"]
        try:
            key = await self.ready_store().revoke_key(key_id)
        except KeyNotFound:
            return error_response(
                404, f"No key {key_id!r}.", "invalid_request_error", "key_not_found"
            )
        self._changed()
        return json_response(key_out(key))

    async def rotate_key(self, request: Request) -> Response:
        key_id = request.path_params["key_id"]
        try:
            created = await self.ready_store().rotate_key(key_id)
        except KeyNotFound:
            return error_response(
                404, f"No key {key_id!r}.", "invalid_request_error", "key_not_found"
            )
        except KeyRevoked:
            return error_response(
                409,
                f"The key {key_id!r} is revoked; create a new one.",
                "invalid_request_error",
                "key_revoked",
            )
        self._changed()
        return json_response(NewKey(key=key_out(created.key), secret=created.secret))

    async def usage(self, request: Request) -> Response:
        by = request.query_params.get("by", "key")
        if by not in ("key", "model", "day"):
            return bad_request("by must be key, model or day.", "by")
        since = time_param(request, "since")
        if isinstance(since, Response):
            return since
        rows = await self.ready_store().usage_report(by, since)
        data = [msgspec.convert({"name": None, **row}, UsageGroup) for row in rows]
        return json_response(UsageReport(by=by, since=_aware(since), data=data))  # type: ignore[arg-type]

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


def admin_routes(store: Store | None, master_key: str | None, **options: Any) -> list[Route]:
    """Shorthand for ``AdminAPI(store, master_key, **options).routes``."""
    return AdminAPI(store, master_key, **options).routes
