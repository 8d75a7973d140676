"""Attempts before the first byte: open an upstream for a request, retrying on the
failures worth retrying, across the model's deployments and then its fallbacks.

Retried: connection errors, timeouts, 408, 409, 429 and 5xx. Not retried: other 4xx (the
request itself is wrong; another deployment would refuse it too). Between attempts:
exponential backoff with full jitter, ``uniform(0, min(max, base * 2**n))``. A
``Retry-After`` marks that deployment as cooling down: the next attempt goes elsewhere
when it can, waits for it when it cannot and the wait is at most ``retry_after_max``,
and otherwise stops, handing the upstream's answer (and its Retry-After) to the client.

The request's timeouts live here too (``watchdog``, created with the first attempt):
the total from then on; each attempt's first-token clock from its request's sending.

The attempts end one way, ``end()`` (what ``async with attempts:`` does on leaving): the
timers stop first, so no timeout can cancel what follows, then the in-flight slot of
the attempt in course is given back. It may be reached more than once (an outer and an
inner ``async with``); only the first does anything.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar

from ..config import RetryConfig
from ..events import ChatRequest, GatewayError
from ..limits import Limiter, Ticket
from ..providers.base import Upstream
from ..router import Candidate, Deployment, Plan, Timeouts
from . import channel_limits
from .watchdog import TOTAL, Watchdog

log = logging.getLogger("tokenrelay.attempts")

T = TypeVar("T")
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


def retryable(error: GatewayError) -> bool:
    return error.status in RETRYABLE_STATUS or error.kind in ("timeout", "overloaded")


def _retry_after(error: GatewayError) -> float | None:
    value = error.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: treated as no hint


@dataclass(slots=True)
class Attempts:
    """The attempts of one request. ``log`` lists ``deployment:outcome`` per attempt, for
    the response headers and the access log: one entry per request sent upstream (an
    attempt that opened and then failed has its ``:open`` replaced by the failure)."""

    plan: Plan
    config: RetryConfig
    request_id: str
    retries: Callable[[str], None] | None = None  # counts a retry of a deployment
    log: list[str] = field(default_factory=list)
    current: Candidate | None = None
    watchdog: Watchdog | None = None
    opened: bool = False  # the current attempt's upstream answered 200 (logged ":open")
    answered: bool = False  # the last attempt made opened and did not fail (it is charged)
    key_id: str | None = None  # the upstream key of the last attempt that opened
    limiter: Limiter | None = None  # checks the channels' own limits (channel_limits.py)
    ticket: Ticket | None = None  # the current attempt's, on a channel with limits

    @property
    def count(self) -> int:
        """Attempts made: requests sent to an upstream."""
        return len(self.log) + (self.current is not None and not self.opened)

    def current_or_last(self) -> Deployment | None:
        """The deployment of the attempt in course, or of the last one made."""
        return self.plan.last.deployment if self.plan.last is not None else None

    @property
    def fallback_used(self) -> bool:
        return self.plan.last is not None and self.plan.last not in self.plan.groups[0]

    @property
    def deployment(self) -> str:
        return self.plan.last.deployment.name if self.plan.last else "-"

    def timeouts(self) -> Timeouts:
        return self.current.timeouts if self.current is not None else Timeouts()

    def timeout_error(self, which: str) -> GatewayError:
        """The error of an expired timeout (``watchdog.expired()``)."""
        assert self.watchdog is not None
        if which == TOTAL:
            total = self.watchdog.total or 0.0
            return GatewayError(
                "timeout", f"the request took longer than {total:g}s", code="total_timeout"
            )
        limit = self.watchdog.fired_limit or 0.0
        name = self.current.deployment.name if self.current is not None else self.deployment
        return GatewayError(
            "timeout",
            f"upstream {name} sent nothing for {limit:g}s ({which.replace('_', ' ')} timeout)",
            code=f"{which}_timeout",
        )

    async def open(self, request: ChatRequest, last_error: GatewayError | None = None) -> Upstream:
        """An opened upstream, or the last failure once attempts or candidates run out
        (the request's timeouts are then stopped)."""
        try:
            talk = self.plan.conversation
            return await self._next(lambda d: d.provider.open(request, d.model, talk), last_error)
        except GatewayError:
            self.end()
            raise

    async def call(self, call: Callable[[Deployment], Awaitable[T]]) -> T:
        """A whole call that is not a stream (embeddings), with the same attempts,
        backoff, breakers and timeouts as opening a stream; the attempts end when it
        returns, whichever way."""
        try:
            result = await self._next(call, None)
            self.succeeded()
            return result
        finally:
            self.end()

    async def __aenter__(self) -> Attempts:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.end()

    def end(self) -> None:
        """The request is done with its upstreams: its timeouts stop, then the
        attempt in course (if any) gives back its in-flight slot."""
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.current is not None:
            self.current.deployment.in_flight -= 1
            self.current, self.opened = None, False
        self._release()

    def _release(self) -> None:
        if self.ticket is not None and self.limiter is not None:
            channel_limits.release(self.limiter, self.ticket)
        self.ticket = None

    async def _next(
        self, call: Callable[[Deployment], Awaitable[T]], last_error: GatewayError | None
    ) -> T:
        limited: set[int] = set()  # candidates found at their channel's limit (by id)
        while self.count < self.config.max_attempts:
            candidate = self.plan.next()
            if candidate is None:  # an empty plan
                break
            deployment = candidate.deployment
            cooling = deployment.cooling_until - time.monotonic()
            if last_error is not None and cooling > self.config.retry_after_max:
                break  # the best left asks for a longer wait than ours: the client decides
            if candidate.limits is not None and self.limiter is not None:
                if id(candidate) in limited:
                    break  # a new round reached it again: every other one was tried
                try:
                    self.ticket = await channel_limits.admit(self.limiter, candidate)
                except GatewayError as busy:  # not the channel's failure: the next one
                    limited.add(id(candidate))
                    last_error = busy
                    continue
            timeouts = candidate.timeouts
            if self.watchdog is None:
                self.watchdog = Watchdog(timeouts.total)
            try:
                if self.count > 0:
                    await self._wait(candidate)
                self.current, self.opened = candidate, False
                deployment.in_flight += 1
                deployment.breaker.begin()
                self.watchdog.attempt(timeouts.first_token, timeouts.idle)
                upstream = await call(deployment)
            except asyncio.CancelledError:
                which = self.watchdog.expired()
                if which is None:
                    raise
                error = self.timeout_error(which)
                self.failed(error)
                if which == TOTAL:
                    raise error from None
                last_error = error
                continue
            except GatewayError as error:
                self.failed(error)
                if not retryable(error):
                    raise
                last_error = error
                continue
            self.log.append(f"{deployment.name}:open")
            self.opened = self.answered = True
            self.key_id = getattr(upstream, "key_id", None)  # the upstream key that served it
            return upstream
        if last_error is None:
            raise GatewayError("upstream", "No deployment is available for this model.")
        raise last_error

    async def _wait(self, candidate: Candidate) -> None:
        n = self.count
        delay = random.uniform(
            0, min(self.config.backoff_max, self.config.backoff_base * 2 ** (n - 1))
        )
        cooling = candidate.deployment.cooling_until - time.monotonic()
        if cooling > 0:
            delay = max(delay, min(cooling, self.config.retry_after_max))
        if delay > 0:
            await asyncio.sleep(delay)

    def failed(self, error: GatewayError) -> None:
        """The current attempt failed (before the first byte, or after it)."""
        candidate = self.current
        if candidate is None:
            return
        deployment = candidate.deployment
        deployment.in_flight -= 1
        self._release()
        entry = f"{deployment.name}:{error.status}"
        if self.opened:  # the attempt opened, then failed: still one attempt
            self.log[-1] = entry
        else:
            self.log.append(entry)
        self.current, self.opened, self.answered = None, False, False
        if retryable(error):
            deployment.breaker.failure()
            if self.retries is not None:
                self.retries(deployment.name)
            wait = _retry_after(error)
            if wait:
                deployment.cooling_until = time.monotonic() + wait
        else:
            deployment.breaker.success()  # the deployment answered; the request was wrong
        log.info(
            "%s attempt %d on %s failed: %s",
            self.request_id,
            self.count,
            deployment.name,
            error.message,
        )

    def succeeded(self) -> None:
        """The current attempt produced its answer (or its first byte)."""
        if self.current is not None:
            self.current.deployment.breaker.success()

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-tokenrelay-attempts", str(self.count).encode()),
            (b"x-tokenrelay-deployment", self.deployment.encode()),
        ]
