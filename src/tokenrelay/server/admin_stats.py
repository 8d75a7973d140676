"""Time series and spend for the ``/admin`` dashboard, behind the master key.

    GET /admin/stats        per model, per hour or day: requests, input / output
                            tokens, cost, errors and error rate, TTFT p50 and p95
    GET /admin/stats/spend  per key: spend in its current budget period, and in total

The routes share an ``AdminAPI``'s store (attached later is fine), its master-key check
and its JSON errors, so they behave exactly like the rest of ``/admin``; mount them
before that API's catch-all route (``stats_routes(admin) + admin.routes``).

Everything is aggregated in SQL, on SQLite and PostgreSQL alike. Buckets are UTC hours
or days: a row's bucket is ``(epoch(created_at) - epoch(first bucket)) // size``, an
integer division both databases do exactly. Percentiles use the nearest-rank method
(the value at rank ``ceil(p * n)`` of the ``n`` sorted values, so always a measured
TTFT, never an interpolation), ranked with window functions: ``row_number()`` and
``count()`` over each group, and ``ceil(n / 2)`` and ``ceil(95 n / 100)`` as integer
arithmetic. An error is a request whose outcome is neither ``ok`` nor one the client
chose (``cancelled``: it stopped the stream; ``disconnected``: it went away); those are
counted as ``client_ended``. Costs are the recorded ones (unpriced requests add 0).

The queries are ``store/stats.py``. ``STATS_OPENAPI`` is this API's OpenAPI fragment; ``merge_openapi`` adds it to the admin
API's document.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..store.keys import utcnow
from ..store.stats import (
    AUTO_DAY_AFTER,
    BUCKET_SIZES,
    CLIENT_ENDED,
    DEFAULT_SPANS,
    MAX_BUCKETS,
    MAX_KEY_ID,
    KeySpend,
    ModelStats,
    SpendReport,
    StatsReport,
    StatsSeries,
    StatsTotals,
    floor_time,
    spend_report,
    stats_report,
)
from .admin_http import METHODS, AdminGate, bad_request, json_response, time_param
from .admin_schema import (
    TIME_SCHEMA,
    ErrorBody,
    error_bodies,
    json_body,
    query_param,
    schemas_of,
)

__all__ = [
    "CLIENT_ENDED",
    "MAX_BUCKETS",
    "STATS_OPENAPI",
    "AdminStats",
    "KeySpend",
    "ModelStats",
    "SpendReport",
    "StatsReport",
    "StatsSeries",
    "StatsTotals",
    "merge_openapi",
    "spend_report",
    "stats_report",
    "stats_routes",
]


def _minus(moment: datetime, delta: timedelta) -> datetime:
    try:
        return moment - delta
    except OverflowError:
        return datetime.min


def _earliest(until: datetime, bucket: str) -> datetime:
    """The earliest ``since`` whose buckets up to ``until`` are at most ``MAX_BUCKETS``:
    the start of a bucket, so the first bucket is whole."""
    size = BUCKET_SIZES[bucket]
    lowest = _minus(until, MAX_BUCKETS * size)
    start = floor_time(lowest, bucket)
    return start + size if start < lowest else start


class AdminStats:
    """The dashboard's read-only routes behind an admin gate (the ``AdminAPI``): its
    store (read at each request, so a store attached later is picked up), master key and
    error shapes."""

    def __init__(self, admin: AdminGate) -> None:
        self.admin = admin

    @property
    def routes(self) -> list[Route]:
        """Starlette routes; mount them before ``admin.routes`` (its catch-all)."""
        table = [("/admin/stats", self.stats), ("/admin/stats/spend", self.spend)]
        return [
            Route(path, self.admin.dispatch({"GET": handler}, True), methods=METHODS)
            for path, handler in table
        ]

    async def stats(self, request: Request) -> Response:
        bucket = request.query_params.get("bucket")
        if bucket is not None and bucket not in BUCKET_SIZES:
            return bad_request("bucket must be hour or day.", "bucket")
        since = time_param(request, "since")
        if isinstance(since, Response):
            return since
        until = time_param(request, "until")
        if isinstance(until, Response):
            return until
        until = until or utcnow()
        if bucket is None:
            auto = since is None or until - since <= AUTO_DAY_AFTER
            bucket = "hour" if auto else "day"
        if since is None:
            since = _minus(until, DEFAULT_SPANS[bucket])
        since = max(since, _earliest(until, bucket))
        key_id = request.query_params.get("key_id")
        if key_id is not None and not 1 <= len(key_id) <= MAX_KEY_ID:
            return bad_request(f"key_id must be 1 to {MAX_KEY_ID} characters.", "key_id")
        async with self.admin.ready_store().engine.connect() as conn:
            report = await stats_report(conn, since, until, bucket, key_id)  # type: ignore[arg-type]
        return json_response(report)

    async def spend(self, request: Request) -> Response:
        async with self.admin.ready_store().engine.connect() as conn:
            return json_response(await spend_report(conn))


def stats_routes(admin: AdminGate) -> list[Route]:
    """Shorthand for ``AdminStats(admin).routes``."""
    return AdminStats(admin).routes


# --- OpenAPI ----------------------------------------------------------------------------


def _openapi() -> dict[str, Any]:
    errors = ("400", "401", "403", "503")
    stats = {
        "operationId": "stats",
        "summary": "Time series per model: requests, tokens, cost, error rate, TTFT p50/p95",
        "parameters": [
            query_param(
                "since", TIME_SCHEMA, "Start (default: 24 h, or 30 days by day, before until)"
            ),
            query_param("until", TIME_SCHEMA, "End, exclusive (default: now)"),
            query_param(
                "bucket",
                {"type": "string", "enum": list(BUCKET_SIZES)},
                "Bucket size (default: hour for spans up to 3 days, else day)",
            ),
            query_param(
                "key_id",
                {"type": "string", "minLength": 1, "maxLength": MAX_KEY_ID},
                "Only this key's requests",
            ),
        ],
        "responses": {
            "200": json_body("StatsReport", "Series per model, one value per bucket"),
            **error_bodies(*errors),
        },
    }
    spend = {
        "operationId": "spend",
        "summary": "Spend per key in its current budget period and in total",
        "responses": {
            "200": json_body("SpendReport", "Every key's spend"),
            **error_bodies(*errors[1:]),
        },
    }
    return {
        "paths": {"/admin/stats": {"get": stats}, "/admin/stats/spend": {"get": spend}},
        "components": {"schemas": schemas_of([StatsReport, SpendReport, ErrorBody])},
    }


STATS_OPENAPI: dict[str, Any] = _openapi()
"""This API's paths and schemas, to merge into the admin API's OpenAPI document."""


def merge_openapi(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (the admin API's OpenAPI document) with ``STATS_OPENAPI`` and the
    channels' ``CHANNELS_OPENAPI`` added."""
    from .admin_channels import (
        CHANNELS_OPENAPI,  # the channels' routes (no cycle: it needs not this)
    )

    components = document.get("components", {})
    fragments = (STATS_OPENAPI, CHANNELS_OPENAPI)
    paths = dict(document.get("paths", {}))
    schemas = dict(components.get("schemas", {}))
    for fragment in fragments:
        paths.update(fragment["paths"])
        schemas.update(fragment["components"]["schemas"])
    return {**document, "paths": paths, "components": {**components, "schemas": schemas}}
