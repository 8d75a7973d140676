"""Keys, limits, prices and usage on the request path.

One ``Accounts`` per gateway: ``admit`` runs before anything reaches an upstream (who is
asking, may they use this model, do their limits allow it); ``settle`` runs exactly
once when the request ends (limits reconciled with the real counts, one usage record
with its cost). Records leave the request path through the batched ``UsageWriter``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import Config
from ..events import ChatRequest, Usage
from ..fold import estimate_tokens as tokens_of
from ..fold import prompt_chars
from ..limits import Limiter, Ticket, create_limiter
from ..pricing import PriceTable, saved_by_cache
from ..protocols.registry import REGISTRY
from ..store import Authenticator, Principal, Store, UsageRow, UsageWriter, WriterOptions
from .budget_watch import release_and_watch

if TYPE_CHECKING:
    from ..notify import Notifier
    from ..store.revocations import KeyChanges

log = logging.getLogger("tokenrelay.accounts")

DEFAULT_OUTPUT_ESTIMATE = 1024  # output tokens assumed for the tpm check when max_tokens is unset


def estimate_tokens(request: ChatRequest) -> int:
    """Tokens to reserve against a tpm limit before the call: the prompt's estimate
    (``fold.CHARS_PER_TOKEN``), plus max_tokens (or a default). Reconciled with what
    the request is charged when it ends."""
    return tokens_of(prompt_chars(request)) + (request.max_tokens or DEFAULT_OUTPUT_ESTIMATE)


@dataclass(slots=True)
class Admission:
    principal: Principal
    ticket: Ticket | None = None


@dataclass(slots=True, frozen=True)
class Settlement:
    """How one request ended, as its ``Exchange`` hands it over: ``usage`` is what it
    is charged (``fold.charged_usage``), ``None`` when no upstream answered it;
    ``priced_model`` is the deployment's upstream model (the asked one when none was
    reached); ``decoded``: the request was valid (only those get a usage record)."""

    request_id: str
    model: str
    outcome: str
    usage: Usage | None
    decoded: bool
    admission: Admission | None
    priced_model: str
    provider: str | None
    deployment: str | None
    upstream_key_id: str | None  # the upstream key that served it (many keys per channel)
    ttft_ms: float | None
    duration_ms: float
    finish_reason: str | None
    attempts: int
    resumes: int


class Accounts:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.store: Store | None = None
        self.writer: UsageWriter | None = None
        self.auth = Authenticator(
            None,
            config.master_key,
            cache_ttl=config.auth_cache_ttl,
            headers=tuple(h for p in REGISTRY for h in p.credentials),
        )
        self.limiter: Limiter | None = None
        self.prices = PriceTable(config.prices)
        self._pending: set[asyncio.Task[None]] = set()
        self.key_changes: KeyChanges | None = None
        self.notifier: Notifier | None = None  # budget thresholds (budget_watch.py)

    async def start(self) -> None:
        self.store = await Store.open(
            self.config.database_url, key_prefix=self.config.key_prefix or "sk-"
        )
        self.auth.store = self.store
        if self.config.redis_url:  # revokes and rotations heard from every replica
            from ..store.revocations import KeyChanges

            self.key_changes = KeyChanges(self.config.redis_url, self._heard)
            self.key_changes.start()
        u = self.config.usage
        options = WriterOptions(
            batch_size=u.batch_size,
            flush_interval=u.flush_interval,
            spool_max_rows=u.spool_max_rows,
            spill_dir=u.spill_dir,
            retry_max=u.retry_max,
        )
        self.writer = UsageWriter(self.store, options)
        await self.writer.start()
        self.limiter = create_limiter(
            self.config.redis_url, self.store.spend_since, fail_open=self.config.limiter_fail_open
        )

    def _heard(self, key_id: str) -> None:
        self.auth.invalidate()
        log.info("key %r changed: cached key lookups dropped", key_id)

    def keys_changed(self) -> None:
        """A key was revoked or rotated here: drop this replica's cached lookups, and
        tell the others (with Redis) to drop theirs."""
        self.auth.invalidate()
        if self.key_changes is not None:
            self.key_changes.publish("*")

    async def close(self) -> None:
        if self.key_changes is not None:
            await self.key_changes.aclose()
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)
        if self.writer is not None:
            await self.writer.close(timeout=10)
        if self.limiter is not None:
            await self.limiter.aclose()
        if self.store is not None:
            await self.store.close()

    async def principal(self, headers: Mapping[str, str]) -> Principal:
        """Who asks (401 without a valid key, unless the gateway runs in open mode)."""
        return await self.auth.authenticate(headers)

    async def admit(self, principal: Principal, request: ChatRequest) -> Admission:
        """May ``principal`` run ``request`` now? 404 for a model it may not use, 429 for
        a limit or budget it is over (the message names which)."""
        principal.check_model(request.model)
        key = principal.key
        if key is None or self.limiter is None:
            return Admission(principal)
        ticket = await self.limiter.acquire(key.id, key.limits, estimate_tokens(request))
        return Admission(principal, ticket)

    def settle(self, end: Settlement) -> float | None:
        """The request is over: reconcile limits and record its usage, once. The row,
        the tpm reconciliation and the budget's spend all take ``end.usage``. Returns the
        cost charged (USD), if the model is priced."""
        admission, usage = end.admission, end.usage
        cost = self.prices.cost(end.priced_model, usage) if usage is not None else None
        if admission is not None and admission.ticket is not None and self.limiter is not None:
            actual = (usage.input + usage.output) if usage is not None else 0
            budget = admission.principal.key.limits.budget_usd if admission.principal.key else None
            task = asyncio.ensure_future(
                release_and_watch(
                    self.limiter, admission.ticket, actual, cost or 0.0, budget, self.notifier
                )
            )
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        if self.writer is None or not end.decoded:
            return cost
        key = admission.principal.key if admission is not None else None
        self.writer.record(
            UsageRow.from_usage(
                end.request_id,
                end.model,
                usage,
                key_id=key.id if key is not None else None,
                provider=end.provider,
                deployment=end.deployment,
                upstream_key_id=end.upstream_key_id,
                cost_usd=cost,
                cache_saved_usd=saved_by_cache(self.prices.lookup(end.priced_model), usage),
                ttft_ms=end.ttft_ms,
                duration_ms=end.duration_ms,
                outcome=end.outcome,
                finish_reason=end.finish_reason,
                attempts=end.attempts,
                resumes=end.resumes,
            )
        )
        return cost
