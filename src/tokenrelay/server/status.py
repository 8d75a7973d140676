"""The public status page and the figures behind it; the admin's "test this channel".

- ``GET /status``: the page (``web/status.html``), ``GET /status.json``: its data, no
  key needed; both 404 with ``status_page: false``. They show the models the gateway
  lists (``/v1/models`` without a key's restriction) and those models' deployments with
  uptime per window, daily bars, TTFT p50/p95, tokens per second, the error mix and
  whether each deployment is in or out now. Nothing secret: no key, base URL, cost or
  client; names only.
- ``/v1/models`` entries carry the same figures (``decorate``).
- ``POST /admin/deployments/test`` ``{"deployment": "provider/model"}`` (master key):
  one probe (``probes.py``), answered with its status, TTFT and text.

The figures come from the usage table (``store/health.py``), computed at most once per
``CACHE_SECONDS`` per replica (concurrent callers share one computation).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..events import GatewayError
from ..router import Router
from ..store import DRIVER_ERRORS
from ..store.health import WINDOWS, HealthReport, health_report
from ..store.keys import utcnow
from .accounts import Accounts
from .admin_http import AdminGate, bad_request, error_response, json_response
from .probes import tested

CACHE_SECONDS = 5.0


class HealthFigures:
    """The figures, cached for a few seconds."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self._report: HealthReport | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def report(self) -> HealthReport | None:
        """``None`` while the store is not open."""
        store = self.accounts.store
        if store is None:
            return None
        if self._report is not None and time.monotonic() - self._at < CACHE_SECONDS:
            return self._report
        async with self._lock:
            if self._report is None or time.monotonic() - self._at >= CACHE_SECONDS:
                async with store.engine.connect() as conn:
                    self._report = await health_report(conn, utcnow())
                self._at = time.monotonic()
        return self._report


def model_fields(report: HealthReport | None, model: str) -> dict[str, Any]:
    """The extra fields of one ``/v1/models`` entry (empty without traffic)."""
    figures = report.models.get(model) if report is not None else None
    if figures is None:
        return {}
    return {
        "uptime": figures.uptime,
        "ttft_ms": {"p50": figures.ttft_p50_ms, "p95": figures.ttft_p95_ms},
        "tokens_per_second": figures.tokens_per_second,
    }


def decorate(body: dict[str, Any], report: HealthReport | None) -> dict[str, Any]:
    """A model list with each entry's figures added (entries are ``{"id": ...}``)."""
    for entry in body.get("data") or []:
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            entry.update(model_fields(report, entry["id"]))
    return body


class StatusRoutes:
    def __init__(
        self,
        router: Callable[[], Router],
        accounts: Accounts,
        admin: AdminGate,
        enabled: bool,
        prompt: str,
    ) -> None:
        self._router = router  # the router in force (channels are swapped live)
        self.accounts = accounts
        self.admin = admin
        self.enabled = enabled
        self.prompt = prompt
        self.figures = HealthFigures(accounts)

    @property
    def router(self) -> Router:
        return self._router()

    def _deployments(self, model: str) -> list[tuple[str, str]]:
        """``(name, state)`` of each deployment ``model`` may use, fallbacks excluded."""
        try:
            plan = self.router.plan(model)
        except GatewayError:
            return []
        return [(c.deployment.name, c.deployment.breaker.state) for c in plan.groups[0]]

    async def status_json(self, request: Request) -> Response:
        if not self.enabled:
            return error_response(
                404, "The status page is off.", "invalid_request_error", "not_found"
            )
        report = None
        with suppress(*DRIVER_ERRORS):  # the database is away: states without figures
            report = await self.figures.report()
        models = []
        for name, _ in self.router.listed():
            figures = report.models.get(name) if report is not None else None
            deployments = []
            for d, state in self._deployments(name):
                f = report.deployments.get(d) if report is not None else None
                deployments.append(
                    {"name": d, "state": "in" if state == "closed" else "out", "figures": f}
                )
            models.append({"model": name, "figures": figures, "deployments": deployments})
        body = {
            "generated_at": report.generated_at if report is not None else utcnow(),
            "windows": list(WINDOWS),
            "bar_days": report.bar_days if report is not None else [],
            "models": models,
        }
        return Response(
            msgspec.json.encode(body),
            media_type="application/json",
            headers={"cache-control": "no-cache"},
        )

    async def test(self, request: Request) -> Response:
        try:
            body = msgspec.json.decode(await request.body())
        except msgspec.DecodeError:
            return bad_request("The body must be JSON.")
        name = body.get("deployment") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            return bad_request("deployment: a provider/model name is required.", "deployment")
        try:
            plan = self.router.plan(name)
        except GatewayError as error:
            return error_response(404, error.message, "invalid_request_error", "not_found")
        deployment = plan.groups[0][0].deployment
        writer = self.accounts.writer
        result = await tested(deployment, self.prompt, writer)
        return json_response(result)

    def routes(self, page: BaseRoute | None) -> list[BaseRoute]:
        routes: list[BaseRoute] = [Route("/status.json", self.status_json, methods=["GET"])]
        if page is not None and self.enabled:
            routes.append(page)
        routes.append(
            Route(
                "/admin/deployments/test",
                self.admin.dispatch({"POST": self.test}, True),
                methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            )
        )
        return routes
