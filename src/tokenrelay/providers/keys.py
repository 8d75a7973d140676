"""A channel's upstream keys: requests spread over them, a key answered 429 rests for the
upstream's ``Retry-After``, a key answered 401 or 403 is disabled (and flagged) until the
channel is changed or the gateway restarts.

A request of a conversation (``affinity.py``) goes to the usable key its conversation
ranks first, by the same rendezvous hashing as deployments (on the key's id, so every
replica ranks alike): the provider's prompt cache is per key (per account, or per
machine behind it) as it is per deployment. While that key rests or is disabled the
conversation uses its next-ranked key, and comes back after. Requests of no
conversation, or of a model with ``affinity: false``, go round robin.

A key is named by an id, never by its secret: ``uk_`` and a short hash of the provider
name and the secret (for keys from the config file), or the database row's id (for
channels managed live). The id is what the usage record and the admin page show.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from ..affinity import Conversation

log = logging.getLogger("tokenrelay.providers")

DEFAULT_COOLDOWN = 1.0  # seconds a 429'd key rests when the upstream named no Retry-After
MAX_COOLDOWN = 3600.0  # longest rest honoured (a bad header must not bench a key for days)


def key_id(provider: str, secret: str) -> str:
    """The stable id of a configured key (12 hex digits of a hash: nothing to recover)."""
    digest = hashlib.sha256(f"{provider}\0{secret}".encode("utf-8", "surrogatepass"))
    return "uk_" + digest.hexdigest()[:12]


def mask(secret: str) -> str:
    """How a secret is shown: its last 4 characters only (all hidden if it is short)."""
    return "…" + secret[-4:] if len(secret) >= 12 else "…"


@dataclass(slots=True, eq=False)
class UpstreamKey:
    id: str
    secret: str = field(repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # the auth headers
    resting_until: float = 0.0  # monotonic; after a 429
    disabled: str | None = None  # why, after a 401/403 ("401 from upstream")
    served: int = 0  # requests sent with it (this process)

    def state(self, now: float) -> str:
        if self.disabled is not None:
            return "disabled"
        return "resting" if self.resting_until > now else "active"


class KeyPool:
    """The keys of one channel. ``pick`` is round robin over the usable keys; ``None``
    when the channel has no key (a keyless upstream)."""

    def __init__(
        self,
        keys: list[UpstreamKey],
        clock: Callable[[], float] = time.monotonic,
        on_disabled: Callable[[UpstreamKey, int], None] | None = None,
    ) -> None:
        self.keys = keys
        self._clock = clock
        self._next = 0
        self.on_disabled = on_disabled  # told (key, status) when a key is disabled

    def __len__(self) -> int:
        return len(self.keys)

    def pick(
        self, exclude: Collection[str] = (), conversation: Conversation | None = None
    ) -> UpstreamKey | None:
        """The next usable key not in ``exclude`` (the one ``conversation`` ranks first,
        when there is a choice); if every key rests, the one whose rest ends first (the
        upstream then answers for itself); ``None`` if none is left."""
        keys = self.keys
        if not keys:
            return None
        now = self._clock()
        n = len(keys)
        if conversation is not None and n > 1:
            usable = [
                k
                for k in keys
                if k.id not in exclude and k.disabled is None and k.resting_until <= now
            ]
            if len(usable) > 1 and conversation.key:
                return max(usable, key=lambda k: conversation.score(k.id, 1.0))
        for i in range(n):
            key = keys[(self._next + i) % n]
            if key.id not in exclude and key.disabled is None and key.resting_until <= now:
                self._next = (self._next + i + 1) % n
                return key
        resting = [k for k in keys if k.id not in exclude and k.disabled is None]
        return min(resting, key=lambda k: k.resting_until) if resting else None

    def usable(self, exclude: Collection[str] = ()) -> bool:
        """Whether a key not in ``exclude`` is neither disabled nor resting."""
        now = self._clock()
        return any(
            k.id not in exclude and k.disabled is None and k.resting_until <= now for k in self.keys
        )

    def rest(self, key: UpstreamKey, retry_after: float | None) -> None:
        wait = DEFAULT_COOLDOWN if retry_after is None else min(max(retry_after, 0.0), MAX_COOLDOWN)
        key.resting_until = self._clock() + wait
        log.info("upstream key %s rests %.1fs after a 429", key.id, wait)

    def disable(self, key: UpstreamKey, status: int) -> None:
        """Take ``key`` out after a 401/403, unless it is the channel's last usable key:
        that one stays in use (flagged), so clients get the upstream's own answer and
        not a gateway-made one."""
        if not self.usable({key.id}):
            key.disabled = None
            log.warning("upstream key %s got %d and is the last usable one: kept", key.id, status)
            return
        if key.disabled is None:
            key.disabled = f"{status} from upstream"
            log.warning("upstream key %s disabled: the upstream answered %d", key.id, status)
            if self.on_disabled is not None:
                self.on_disabled(key, status)

    def redact(self, text: str) -> str:
        for key in self.keys:
            if len(key.secret) >= 4:
                text = text.replace(key.secret, "[redacted]")
        return text

    def leaks(self, raw: bytes) -> bool:
        return any(len(k.secret) >= 4 and k.secret.encode() in raw for k in self.keys)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds of a ``Retry-After`` given as a number (an HTTP date counts as unknown)."""
    if not value:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None
