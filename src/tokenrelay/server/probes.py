"""Probes: one tiny request to one deployment, for the admin page's "test this channel"
and, on a schedule (``probes.interval``), for deployments that are out past their
cooldown or got no traffic for a round.

A probe asks for one token of ``probes.prompt`` (streamed, ``max_tokens: 1``; an
upstream may send a little more) and reads the answer to its end. It reports the HTTP
status, the time to first token and the text. A scheduled probe counts for the
deployment's health rule like any request (success brings an out deployment back) and
writes a usage row with ``request_id`` ``probe-…``, no key and no cost: it counts in the
uptime and latency figures of its deployment (``store/health.py``) and is never billed
to anyone. Providers with an upstream key are probed on schedule only with
``probes.keyed: true`` (each probe is a billed request upstream); keyless ones (``local``,
a self-hosted server without a key) always are when probes are on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from ..config import ProbesConfig
from ..events import (
    ChatRequest,
    GatewayError,
    Message,
    TextDelta,
    TextPart,
    Usage,
    kind_for_status,
)
from ..ids import token_hex
from ..router import Deployment, Router
from ..store import UsageRow, UsageWriter

log = logging.getLogger("tokenrelay.probes")

PROBE_TIMEOUT = 60.0  # seconds a probe may take in all
ANSWER_MAX = 2000  # characters of the answer kept for the admin page


class ProbeResult(msgspec.Struct, kw_only=True):
    deployment: str
    ok: bool
    status: int  # 200, or the failure's HTTP status
    ttft_ms: float | None
    duration_ms: float
    answer: str
    output_tokens: int = 0
    error: str | None = None


def keyed(deployment: Deployment) -> bool:
    """Whether the deployment's provider sends an upstream key (probes cost money)."""
    endpoint = getattr(deployment.provider, "endpoint", None)
    return bool(getattr(endpoint, "api_key", None))


async def probe(deployment: Deployment, prompt: str = "ping") -> ProbeResult:
    """Send one tiny request to ``deployment`` and read its answer; never raises for an
    upstream failure (it is the result)."""
    request = ChatRequest(
        model=deployment.model,
        messages=[Message("user", [TextPart(prompt)])],
        stream=True,
        max_tokens=1,
        include_usage=True,
    )
    started = time.perf_counter()
    first: float | None = None
    text: list[str] = []
    output = 0
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            upstream = await deployment.provider.open(request, deployment.model)
            try:
                async for events in upstream.events():
                    for event in events:
                        if first is None:
                            first = time.perf_counter()
                        if isinstance(event, TextDelta) and sum(map(len, text)) < ANSWER_MAX:
                            text.append(event.text)
                        elif isinstance(event, Usage):
                            output = max(output, event.output)
            finally:
                await upstream.aclose()
    except GatewayError as error:
        return _result(deployment, started, first, text, output, error.status, error.message)
    except TimeoutError:
        return _result(deployment, started, first, text, output, 504, "the probe timed out")
    return _result(deployment, started, first, text, output, 200, None)


def _result(
    deployment: Deployment,
    started: float,
    first: float | None,
    text: list[str],
    output: int,
    status: int,
    error: str | None,
) -> ProbeResult:
    return ProbeResult(
        deployment=deployment.name,
        ok=error is None,
        status=status,
        ttft_ms=round((first - started) * 1000, 1) if first is not None else None,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        answer="".join(text)[:ANSWER_MAX],
        output_tokens=output,
        error=error,
    )


def usage_row(result: ProbeResult, deployment: Deployment) -> UsageRow:
    """The usage row of a probe: no key, no cost, marked by its id."""
    return UsageRow(
        request_id=f"probe-{token_hex(12)}",
        model=deployment.name,
        provider=deployment.provider.name,
        deployment=deployment.name,
        output_tokens=result.output_tokens,
        ttft_ms=result.ttft_ms,
        duration_ms=result.duration_ms,
        outcome="ok" if result.ok else kind_for_status(result.status),
    )


async def tested(deployment: Deployment, prompt: str, writer: UsageWriter | None) -> ProbeResult:
    """A probe that counts: the health rule hears it, and its usage row is written."""
    health = deployment.breaker
    health.begin()
    result = await probe(deployment, prompt)
    if result.ok:
        health.success()
    elif result.status >= 500 or result.status in (408, 409, 429):
        health.failure(result.error or f"HTTP {result.status}")
    else:
        health.success()  # it answered; our probe was refused (e.g. a 400 for max_tokens)
    if writer is not None:
        writer.record(usage_row(result, deployment))
    return result


class Prober:
    """The scheduled probes of one gateway (started only when ``interval`` > 0)."""

    def __init__(self, router: Callable[[], Router], config: ProbesConfig, writer: Any) -> None:
        self._router = router  # the router in force (channels are swapped live)
        self.config = config
        self.writer: UsageWriter | None = writer
        self._task: asyncio.Task[None] | None = None

    @property
    def router(self) -> Router:
        return self._router()

    def start(self) -> None:
        if self.config.interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def due(self) -> list[Deployment]:
        """The deployments a round probes: out past cooldown, or idle for a round."""
        for name, _ in self.router.listed():  # make the listed ones known to the router
            try:
                self.router.plan(name)
            except GatewayError:
                continue
        idle_before = time.monotonic() - self.config.interval
        found = []
        for d in self.router.deployments():
            health = d.breaker
            if health.out:
                if health.allows():
                    found.append(d)
            elif health.last_used < idle_before and (self.config.keyed or not keyed(d)):
                found.append(d)
        return found

    async def round(self) -> list[ProbeResult]:
        due = self.due()
        results = await asyncio.gather(*(tested(d, self.config.prompt, self.writer) for d in due))
        for r in results:
            if not r.ok:
                log.info("probe of %s failed: HTTP %d %s", r.deployment, r.status, r.error)
        return list(results)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.interval)
            await self.round()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
