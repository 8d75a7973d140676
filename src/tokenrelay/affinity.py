"""Conversation affinity: the requests of one conversation go to one deployment.

A provider's prompt cache lives where the prompt was served, so a conversation spread
over several deployments (or upstream keys) pays for its prefix again on each of them.
The router therefore prefers, among the healthy deployments it may use, the one a
conversation key ranks first by weighted rendezvous hashing (highest random weight):
each (key, deployment) pair gets a score ``-weight / ln(u)``, ``u`` a uniform number
drawn from their hash, and the highest score wins. The choice needs no state shared
between replicas, it is in proportion to the weights over many conversations, and when
a deployment fails or is taken out (breaker open, Retry-After) only its own
conversations move, each to its next-ranked deployment; they come back when it is
healthy again.

The conversation key, first found of: the request's ``prompt_cache_key`` (OpenAI's own
cache-routing hint), the ``X-Claude-Code-Session-Id`` header, the end user
(``metadata.user_id`` / ``user``), else a hash of the conversation's beginning (its
system prompt and first user message, which every turn repeats). Computed only when a
choice is to be made (more than one healthy candidate), at most once per request.
"""

from __future__ import annotations

import hashlib
import math

from .events import ChatRequest, TextPart

_PREFIX_BYTES = 65_536  # of the system prompt and first user message: enough to tell apart


class Conversation:
    """The conversation a request belongs to; its ``key`` is worked out when asked."""

    __slots__ = ("_key", "_request", "_session", "_worked")

    def __init__(self, request: ChatRequest, session: str | None = None) -> None:
        self._request = request
        self._session = session
        self._key: str | None = None
        self._worked = False

    @property
    def key(self) -> str | None:
        if not self._worked:
            self._worked = True
            self._key = conversation_key(self._request, self._session)
        return self._key

    def score(self, deployment: str, weight: float) -> float:
        """The rendezvous score of ``deployment`` for this conversation (higher wins)."""
        return score(self.key or "", deployment, weight)


def conversation_key(request: ChatRequest, session: str | None = None) -> str | None:
    """The key that keeps a conversation on one deployment (module doc for the order);
    ``None`` for a request with nothing to go by (no text at all)."""
    if request.prompt_cache_key:
        return "k:" + request.prompt_cache_key
    if session:
        return "s:" + session
    if request.user:
        return "u:" + request.user
    digest = hashlib.blake2b(digest_size=16)
    left = _PREFIX_BYTES
    seen_user = False
    for message in request.messages:
        if message.role not in ("system", "user"):
            continue
        for part in message.parts:
            if isinstance(part, TextPart) and left > 0:
                data = part.text.encode()[:left]
                digest.update(data)
                left -= len(data)
        digest.update(b"\x00")
        if message.role == "user":
            seen_user = True
            break
    if not seen_user and left == _PREFIX_BYTES:
        return None
    return "p:" + digest.hexdigest()


def score(key: str, deployment: str, weight: float) -> float:
    """Weighted rendezvous score: ``-weight / ln(u)``, ``u`` in (0, 1) from the hash."""
    raw = hashlib.blake2b(f"{key}\x00{deployment}".encode(), digest_size=8).digest()
    u = (int.from_bytes(raw, "big") + 1) / (2**64 + 2)
    return -weight / math.log(u)
