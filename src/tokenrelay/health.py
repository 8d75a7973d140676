"""The health rule of a deployment: taken out after N failures within a window.

A deployment is *in* (``closed``) until ``failures`` retryable failures fall within the
last ``window`` seconds, however many successes lie between them (a deployment failing
30 % of its requests is taken out as surely as one failing every request). Then it is
*out* (``open``): plans keep it out of first tries, retries and fallbacks. After
``cooldown`` seconds it is ``half_open``: one request (a live one, or an active probe,
``server/probes.py``) may go through; success brings it back with a clean window, failure
keeps it out for another cooldown. Only the moves out and back are reported
(``HealthRules.listener``: the webhook and the log line, ``notify.py``).

Everything here is a few list operations per attempt, not per chunk; ``allows()`` is
what ``Plan.next`` asks and costs one clock read.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

Listener = Callable[[str, bool, str], None]
"""``(deployment name, out, reason)``: out is True when taken out, False when back."""


@dataclass(slots=True)
class HealthRules:
    """The rule every deployment of a router follows, and who hears its moves."""

    failures: int = 5  # failures within the window that take a deployment out
    cooldown: float = 30.0  # seconds out before one request (or probe) may test it
    window: float = 60.0  # seconds a failure counts for
    listener: Listener | None = None


@dataclass(slots=True)
class Health:
    """One deployment's health. ``state`` is ``closed`` (in), ``open`` (out) or
    ``half_open`` (out, its cooldown over: one test request may go)."""

    rules: HealthRules = field(default_factory=HealthRules)
    name: str = ""
    recent: deque[float] = field(default_factory=deque)  # monotonic times of failures
    opened_at: float | None = None
    probing: bool = False
    last_used: float = 0.0  # monotonic time of the last attempt begun (the prober's idle test)

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if time.monotonic() - self.opened_at >= self.rules.cooldown:
            return "half_open"
        return "open"

    @property
    def out(self) -> bool:
        return self.opened_at is not None

    def allows(self) -> bool:
        if self.opened_at is None:
            return True
        return not self.probing and time.monotonic() - self.opened_at >= self.rules.cooldown

    def begin(self) -> None:
        self.last_used = time.monotonic()
        if self.state == "half_open":
            self.probing = True

    def success(self) -> None:
        self.probing = False
        if self.opened_at is not None:
            self.opened_at = None
            self.recent.clear()
            self._tell(False, "a test request succeeded")

    def failure(self, reason: str = "") -> None:
        now = time.monotonic()
        self.probing = False
        if self.opened_at is not None:  # a test request failed: out for another cooldown
            self.opened_at = now
            return
        recent = self.recent
        recent.append(now)
        while recent and recent[0] <= now - self.rules.window:
            recent.popleft()
        if len(recent) >= self.rules.failures:
            self.opened_at = now
            window = self.rules.window
            self._tell(True, f"{len(recent)} failures within {window:g}s; last: {reason}".strip())

    def failures_in_window(self) -> int:
        now = time.monotonic()
        return sum(1 for t in self.recent if t > now - self.rules.window)

    def _tell(self, out: bool, reason: str) -> None:
        if self.rules.listener is not None:
            self.rules.listener(self.name, out, reason)
