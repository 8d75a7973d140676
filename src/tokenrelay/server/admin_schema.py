"""The admin API's wire types and its OpenAPI 3.1 document.

Request bodies are decoded straight into these ``msgspec`` structs, and the document's
schemas are generated from the same structs (``schema_components``), so what is
published and what is enforced cannot drift apart. The hand-written parts (paths,
parameters, status codes) are checked against the running API by schemathesis.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from ..limits.fields import LIMIT_FIELDS
from ..store.keys import as_utc

RELATIVE = re.compile(r"([0-9]{1,4})([dh])")
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})"
)


def parse_time(
    value: str | None, now: datetime | None = None, *, ahead: bool = False
) -> datetime | None:
    """A time as naive UTC: ``YYYY-MM-DD`` (UTC midnight), an RFC 3339 date-time, or a
    relative ``<n>d`` / ``<n>h`` (that long ago, or from now when ``ahead``).
    ``ValueError`` for anything else; ``None`` for ``None``."""
    if value is None:
        return None
    relative = RELATIVE.fullmatch(value)
    if relative:
        amount = int(relative.group(1))
        delta = timedelta(days=amount) if relative.group(2) == "d" else timedelta(hours=amount)
        base = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
        return base + delta if ahead else base - delta
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        return datetime.fromisoformat(value)
    found = _DATE_TIME.fullmatch(value.upper())
    if found is None:
        raise ValueError(value)
    text = value.upper()
    if found.group(1) and len(found.group(1)) > 7:  # Python takes at most 6 digits
        text = text.replace(found.group(1), found.group(1)[:7], 1)
    return as_utc(datetime.fromisoformat(text))


Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"[^ \t\n\r\x0b\x0c]")]
Period = Literal["daily", "monthly", "total"]
Status = Literal["active", "revoked", "expired"]


_limits_in = [(f.name, f.constrained, None) for f in LIMIT_FIELDS]
_limits_out = [(f.name, f.plain) for f in LIMIT_FIELDS]

CreateKey = msgspec.defstruct(
    "CreateKey",
    [
        ("name", Name),
        ("models", Annotated[list[Name], Meta(max_length=1000)] | None, None),
        *_limits_in,
        ("budget_period", Period, "monthly"),
        ("expires_at", Annotated[datetime, Meta(tz=True)] | None, None),
    ],
    kw_only=True,
    forbid_unknown_fields=True,
)
CreateKey.__doc__ = """A new key. ``models``: allowed model names or shell patterns (``openai/*``);
    omitted or null allows all. Limits omitted or null are unlimited."""

Key = msgspec.defstruct(
    "Key",
    [
        ("id", str),
        ("name", str),
        ("prefix", str),
        ("models", list[str] | None),
        *_limits_out,
        ("budget_period", str),
        ("expires_at", datetime | None),
        ("created_at", datetime),
        ("revoked_at", datetime | None),
        ("status", Status),
    ],
    kw_only=True,
)


class NewKey(msgspec.Struct, kw_only=True):
    key: Key  # type: ignore[valid-type]  # built from LIMIT_FIELDS above
    secret: str


class KeyList(msgspec.Struct, kw_only=True):
    data: list[Key]  # type: ignore[valid-type]


class UsageGroup(msgspec.Struct, kw_only=True):
    group: str | None
    name: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cost_usd: float
    cache_saved_usd: float = 0.0
    cache_hit_rate: float = 0.0
    errors: int
    estimated: int
    unpriced: int


class UsageReport(msgspec.Struct, kw_only=True):
    by: Literal["key", "model", "day"]
    since: datetime | None
    data: list[UsageGroup]


class ErrorDetail(msgspec.Struct, kw_only=True):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(msgspec.Struct, kw_only=True):
    error: ErrorDetail


# --- OpenAPI pieces ----------------------------------------------------------------------

ERROR_TEXTS = {
    "400": "Invalid input",
    "401": "Missing or wrong master key",
    "403": "No master key is configured",
    "404": "No such key",
    "409": "The key is revoked",
    "413": "Body too large",
    "503": "Database unavailable",
}
"""The description of each error status in the documents."""

TIME_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "format": "date"},
        {"type": "string", "format": "date-time"},
        {"type": "string", "pattern": RELATIVE.pattern.join("^$")},
    ]
}
"""What ``parse_time`` accepts, as JSON Schema."""


def schemas_of(structs: list[type[msgspec.Struct]]) -> dict[str, Any]:
    """The components' schemas of ``structs``, referenced as ``#/components/schemas/…``."""
    _, schemas = msgspec.json.schema_components(structs, ref_template="#/components/schemas/{name}")
    return schemas


def json_body(name: str, description: str) -> dict[str, Any]:
    """A response whose JSON body is the component ``name``."""
    schema = {"$ref": f"#/components/schemas/{name}"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error_bodies(*statuses: str) -> dict[str, Any]:
    """Responses for ``statuses``, each an ``ErrorBody`` described by ``ERROR_TEXTS``."""
    return {status: json_body("ErrorBody", ERROR_TEXTS[status]) for status in statuses}


def query_param(
    name: str, schema: dict[str, Any], description: str | None = None
) -> dict[str, Any]:
    """An optional query parameter."""
    param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
    if description is not None:
        param["description"] = description
    return param


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of this API; request and response schemas are generated
    from the very structs that decode and encode the bodies."""
    schemas = schemas_of([CreateKey, Key, NewKey, KeyList, UsageReport, ErrorBody])

    def op(op_id: str, summary: str, ok: tuple[str, str, str], *errors: str, **extra: Any) -> Any:
        responses = {ok[0]: json_body(ok[1], ok[2]), **error_bodies(*errors, "401", "403", "503")}
        return {"operationId": op_id, "summary": summary, "responses": responses, **extra}

    key_id = [{"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    create_body = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreateKey"}}},
    }
    paths = {
        "/admin/keys": {
            "get": op(
                "listKeys",
                "List keys",
                ("200", "KeyList", "The keys"),
                "400",
                parameters=[query_param("include_revoked", {"type": "boolean", "default": False})],
            ),
            "post": op(
                "createKey",
                "Create a key; its secret is shown only here",
                ("201", "NewKey", "The key and its secret"),
                "400",
                "413",
                requestBody=create_body,
            ),
        },
        "/admin/keys/{key_id}/revoke": {
            "post": op(
                "revokeKey",
                "Revoke a key (idempotent)",
                ("200", "Key", "The revoked key"),
                "404",
                parameters=key_id,
            )
        },
        "/admin/keys/{key_id}/rotate": {
            "post": op(
                "rotateKey",
                "Replace a key's secret",
                ("200", "NewKey", "The key and its new secret"),
                "404",
                "409",
                parameters=key_id,
            )
        },
        "/admin/usage": {
            "get": op(
                "usage",
                "Usage totals",
                ("200", "UsageReport", "Totals per group"),
                "400",
                parameters=[
                    query_param(
                        "by", {"type": "string", "enum": ["key", "model", "day"], "default": "key"}
                    ),
                    query_param("since", TIME_SCHEMA),
                ],
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "tokenrelay admin API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }
