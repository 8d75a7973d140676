"""Single-stream tokens: what lets a browser's ``EventSource`` (which cannot send an
``Authorization`` header) start one chat stream without an API key in its URL (URLs
end up in logs, proxies' included).

A token is minted for one key (``POST /v1/chat/stream``, authenticated as any request)
and, when a request body came with it, bound to that prepared request. It starts one
stream within ``ttl`` seconds of its minting, once; after that it only re-attaches to
that stream (the browser's automatic reconnect with ``Last-Event-ID``) until the
stream's retention is over. Tokens are kept by their SHA-256, never as written, and
never logged beyond ``prefix()``.

In memory, for one process. Replicas behind a load balancer need the token where the
GET lands: route ``/v1/chat/stream`` to one replica (sticky sessions), or keep these
records in Redis (not done yet; a ``SET token-hash record EX ttl`` would do).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from .auth import Principal

PREFIX = "st_"
MAX_TOKENS = 100_000
"""Outstanding tokens kept at most (the oldest are dropped first)."""


def prefix(token: str) -> str:
    """What a log may show of a token."""
    return token[: len(PREFIX) + 4] + "…"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(slots=True)
class StreamTicket:
    """What a token stands for: who, the prepared request (JSON bytes; ``None``: taken
    from the GET's query), and the stream it started, once it did."""

    principal: Principal
    body: bytes | None
    expires: float
    stream_id: str | None = None
    claimed: bool = False


class StreamTokens:
    def __init__(self, ttl: float = 60.0, resume_for: float = 300.0) -> None:
        self.ttl = ttl
        self.resume_for = resume_for
        self._tickets: dict[str, StreamTicket] = {}

    def mint(self, principal: Principal, body: bytes | None) -> str:
        now = time.monotonic()
        self._prune(now)
        token = PREFIX + secrets.token_urlsafe(24)
        self._tickets[_digest(token)] = StreamTicket(principal, body, now + self.ttl)
        return token

    def claim(self, token: str) -> StreamTicket | None:
        """The ticket of an unused, unexpired token, now used (``None`` otherwise): one
        start per token, however many requests race for it."""
        ticket = self._live(token)
        if ticket is None or ticket.claimed:
            return None
        ticket.claimed = True
        return ticket

    def started(self, ticket: StreamTicket, stream_id: str) -> None:
        """The token's stream began: from now on it re-attaches to it, for a while."""
        ticket.stream_id = stream_id
        ticket.expires = time.monotonic() + self.resume_for

    def resumable(self, token: str) -> StreamTicket | None:
        """The ticket of a token whose stream began (for a reconnect)."""
        ticket = self._live(token)
        return ticket if ticket is not None and ticket.stream_id is not None else None

    def _live(self, token: str) -> StreamTicket | None:
        if not token.startswith(PREFIX):
            return None
        key = _digest(token)
        ticket = self._tickets.get(key)
        if ticket is not None and ticket.expires <= time.monotonic():
            del self._tickets[key]
            return None
        return ticket

    def _prune(self, now: float) -> None:
        if len(self._tickets) < MAX_TOKENS:
            return
        for key in [k for k, t in self._tickets.items() if t.expires <= now]:
            del self._tickets[key]
        while len(self._tickets) >= MAX_TOKENS:
            del self._tickets[next(iter(self._tickets))]
