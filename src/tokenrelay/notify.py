"""Operator notifications: a log line always, and a JSON ``POST`` to ``webhook_url``
when one is configured.

Events (``event`` field): ``channel_out`` / ``channel_back`` (a deployment taken out by
its health rule / brought back, ``health.py``), ``key_disabled`` (an upstream key
refused with 401/403: the key pool's ``on_disabled``, wired by ``server/app.py``), ``budget_80`` / ``budget_100`` (a
virtual key's spend passed 80 % / 100 % of its budget in the current period). Every
body has ``event``, ``at`` (ISO UTC), ``message`` and the event's own fields; none
carries a secret (a key is named by its id).

Delivery is best effort and never on a request's path: events are queued (bounded,
the oldest dropped when full) and sent one by one by a background task, each with a
5 s timeout and two retries. With replicas, each replica reports what it saw (a channel
out on two replicas is reported twice: health is per replica).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

import httpx

log = logging.getLogger("tokenrelay.notify")

QUEUE_MAX = 1000
ATTEMPTS = 3


class Notifier:
    def __init__(self, webhook_url: str | None) -> None:
        self.url = webhook_url
        self._queue: deque[dict[str, Any]] = deque(maxlen=QUEUE_MAX)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self.sent = 0

    # --- the events -----------------------------------------------------------------

    def channel(self, deployment: str, out: bool, reason: str = "") -> None:
        """A deployment was taken out (``out``) or came back."""
        if out:
            self.emit(
                "channel_out",
                f"deployment {deployment} taken out: {reason}",
                deployment=deployment,
                reason=reason,
            )
        else:
            self.emit(
                "channel_back",
                f"deployment {deployment} is back: {reason}",
                deployment=deployment,
                reason=reason,
            )

    def key_disabled(self, channel: str, key_id: str, status: int, reason: str = "") -> None:
        """An upstream key of ``channel`` was disabled (e.g. it got 401/403)."""
        self.emit(
            "key_disabled",
            f"upstream key {key_id} of {channel} disabled after HTTP {status}",
            channel=channel,
            key_id=key_id,
            status=status,
            reason=reason,
        )

    def budget(self, key_id: str, percent: int, spent: float, budget: float, period: str) -> None:
        """A virtual key's spend passed ``percent`` (80 or 100) of its budget."""
        self.emit(
            f"budget_{percent}",
            f"key {key_id} spent ${spent:.4f} of its ${budget:.2f} {period} budget ({percent}%)",
            key_id=key_id,
            spent_usd=round(spent, 9),
            budget_usd=budget,
            period=period,
        )

    def emit(self, event: str, message: str, **fields: Any) -> None:
        log.warning("notify %s: %s", event, message)
        if self.url is None:
            return
        at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        self._queue.append({"event": event, "at": at, "message": message, **fields})
        self._wake.set()
        if self._task is None:
            try:
                self._task = asyncio.get_running_loop().create_task(self._run())
            except RuntimeError:  # no loop (a CLI): the event stays logged only
                self._queue.clear()

    # --- delivery -------------------------------------------------------------------

    async def _run(self) -> None:
        assert self.url is not None
        self._client = httpx.AsyncClient(timeout=5.0)
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            body = self._queue.popleft()
            await self._deliver(body)

    async def _deliver(self, body: dict[str, Any]) -> None:
        assert self._client is not None and self.url is not None
        for attempt in range(ATTEMPTS):
            started = time.monotonic()
            try:
                response = await self._client.post(self.url, json=body)
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            else:
                if response.status_code < 300:
                    self.sent += 1
                    return
                problem = f"HTTP {response.status_code}"
            log.warning("webhook %s attempt %d failed: %s", body["event"], attempt + 1, problem)
            await asyncio.sleep(max(0.0, 0.5 * 2**attempt - (time.monotonic() - started)))

    async def aclose(self) -> None:
        if self._task is not None:
            deadline = time.monotonic() + 2.0
            while self._queue and time.monotonic() < deadline:  # a short drain at shutdown
                await asyncio.sleep(0.05)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
