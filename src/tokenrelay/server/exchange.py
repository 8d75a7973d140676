"""One request as it goes (``Exchange``): what is known of it, and its end, once: the
metrics, the access log line, and a plain ``Settlement`` handed to ``Accounts``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..events import Usage
from ..fold import Tally, charged_usage
from ..metrics import Metrics
from .accounts import Accounts, Admission, Settlement
from .attempts import Attempts

log = logging.getLogger("tokenrelay.access")


@dataclass(slots=True)
class Exchange:
    """What is known of one request as it goes; logged when it ends."""

    request_id: str
    protocol: str
    model: str = ""  # as asked, known once the body is JSON (for the log line of a 400 too)
    stream: bool = False
    decoded: bool = False  # the request was valid: it gets a usage record
    started: float = field(default_factory=time.perf_counter)
    first_byte: float | None = None
    resumes: int = 0
    attempts: Attempts | None = None
    tally: Tally = field(default_factory=Tally)
    metrics: Metrics | None = None
    accounts: Accounts | None = None
    admission: Admission | None = None
    finished: bool = False
    keep: Callable[[Tally], None] | None = None  # keeps the answer (server/stored.py)
    cost: float | None = None  # USD charged, set when the request is settled (priced model)
    cost_asked: bool = False  # the client asked for the cost in the answer (relay.py)

    def usage(self) -> Usage | None:
        """What this request is charged (``fold.charged_usage``): ``None`` when no
        upstream answered it (refused, failed before its first byte, never reached)."""
        tally = self.tally
        if tally.started or (self.attempts is not None and self.attempts.answered):
            return charged_usage(tally)
        return None

    def ttft_ms(self) -> float | None:
        return (self.first_byte - self.started) * 1000 if self.first_byte else None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def _priced_model(self) -> str:
        attempts = self.attempts
        deployment = attempts.current_or_last() if attempts is not None else None
        return deployment.model if deployment is not None else self.model

    def cost_now(self) -> float | None:
        """The cost of what the request is charged so far, as ``finish`` will settle it
        once nothing more comes (a stream's final usage frame carries it)."""
        if self.accounts is None:
            return None
        usage = self.usage()
        return self.accounts.prices.cost(self._priced_model(), usage) if usage else None

    def settlement(self, outcome: str, usage: Usage | None) -> Settlement:
        """The request's end, as ``Accounts.settle`` takes it."""
        attempts = self.attempts
        deployment = attempts.current_or_last() if attempts is not None else None
        return Settlement(
            request_id=self.request_id,
            model=self.model,
            outcome=outcome,
            usage=usage,
            decoded=self.decoded,
            admission=self.admission,
            priced_model=self._priced_model(),
            provider=deployment.provider.name if deployment is not None else None,
            deployment=deployment.name if deployment is not None else None,
            upstream_key_id=attempts.key_id if attempts is not None else None,
            ttft_ms=self.ttft_ms(),
            duration_ms=self.elapsed_ms(),
            finish_reason=self.tally.finish_reason,
            attempts=max(1, attempts.count) if attempts is not None else 0,
            resumes=self.resumes,
        )

    def finish(self, outcome: str, status: int = 200) -> None:
        if self.finished:
            return
        self.finished = True
        usage = self.usage()
        if self.accounts is not None:
            self.cost = self.accounts.settle(self.settlement(outcome, usage))
        if self.keep is not None:
            self.keep(self.tally)
        elapsed = time.perf_counter() - self.started
        ttft = (self.first_byte - self.started) if self.first_byte else None
        deployment = self.attempts.deployment if self.attempts else "-"
        if self.metrics is not None:
            m = self.metrics
            model = m.labels.model(self.model)  # bounded: a name not served is "other"
            m.child(
                m.requests, model, m.labels.deployment(deployment), self.protocol, outcome
            ).inc()
            if ttft is not None:
                m.child(m.ttft, model).observe(ttft)
            if usage is not None:
                m.child(m.tokens, model, "in").inc(usage.input)
                m.child(m.tokens, model, "out").inc(usage.output)
            if self.attempts is not None and self.attempts.fallback_used:
                m.child(m.fallbacks, model).inc()
        log.info(
            "%s %s model=%s deployment=%s stream=%s status=%d outcome=%s ttft_ms=%s ms=%.1f "
            "finish=%s tokens_in=%s tokens_out=%s resumes=%d attempts=%s",
            self.request_id,
            self.protocol,
            self.model or "-",
            deployment,
            self.stream,
            status,
            outcome,
            f"{ttft * 1000:.1f}" if ttft is not None else "-",
            elapsed * 1000,
            self.tally.finish_reason or "-",
            usage.input if usage else "-",
            usage.output if usage else "-",
            self.resumes,
            ",".join(self.attempts.log) if self.attempts else "-",
        )
