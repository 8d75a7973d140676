"""Single-stream tokens: what lets a browser's ``EventSource`` (which cannot send an
``Authorization`` header) start one chat stream without an API key in its URL (URLs
end up in logs, proxies' included).

A token is minted for one caller (``POST /v1/chat/stream``, authenticated as any
request) and, when a request body came with it, bound to that prepared request. It
starts one stream within ``ttl`` seconds of its minting, once; after that it only
re-attaches to that stream (the browser's automatic reconnect with ``Last-Event-ID``)
until the stream's retention is over. Tokens are kept by their SHA-256, never as
written, and never logged beyond ``prefix()``.

A ticket names its caller by ``Principal.owner`` (``key:<id>``, ``master``, ``open``),
not by a key's secret or a snapshot of it: whoever uses the token has that owner
resolved again (``Authenticator.principal_of``), so a key revoked after the minting
starts nothing.

Two stores with one interface: ``StreamTokens`` here, in memory, for one process; and,
with ``redis_url``, ``RedisStreamTokens`` (``stream_tokens_redis.py``), shared by every
worker and replica, so a token minted on one is used on another.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Protocol

PREFIX = "st_"
MAX_TOKENS = 100_000
"""Outstanding tokens kept at most in memory (the oldest are dropped first)."""


def prefix(token: str) -> str:
    """What a log may show of a token."""
    return token[: len(PREFIX) + 4] + "…"


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(24)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(slots=True)
class StreamTicket:
    """What a token stands for: who (``Principal.owner``), the prepared request (JSON
    bytes; ``None``: taken from the GET's query), and the stream it started, once it
    did. ``digest`` is the token's SHA-256 (the record's key)."""

    owner: str
    body: bytes | None
    digest: str
    expires: float = 0.0  # monotonic; the memory store's (Redis expires its own)
    stream_id: str | None = None
    claimed: bool = False


class TokenStore(Protocol):
    """The interface of both stores. Their methods raise ``GatewayError`` (503) when
    their backing store cannot answer."""

    ttl: float
    resume_for: float

    async def mint(self, owner: str, body: bytes | None) -> str: ...

    async def claim(self, token: str) -> StreamTicket | None:
        """The ticket of an unused, unexpired token, now used (``None`` otherwise): one
        start per token, however many requests race for it, wherever they land."""

    async def started(self, ticket: StreamTicket, stream_id: str) -> None:
        """The token's stream began: from now on it re-attaches to it, for
        ``resume_for`` seconds."""

    async def resumable(self, token: str) -> StreamTicket | None:
        """The ticket of a token whose stream began (for a reconnect)."""

    async def aclose(self) -> None: ...


class StreamTokens:
    """In memory, for one process (no Redis: one process is all there is)."""

    def __init__(self, ttl: float = 60.0, resume_for: float = 300.0) -> None:
        self.ttl = ttl
        self.resume_for = resume_for
        self._tickets: dict[str, StreamTicket] = {}

    async def mint(self, owner: str, body: bytes | None) -> str:
        now = time.monotonic()
        self._prune(now)
        token = new_token()
        key = digest(token)
        self._tickets[key] = StreamTicket(owner, body, key, now + self.ttl)
        return token

    async def claim(self, token: str) -> StreamTicket | None:
        ticket = self._live(token)
        if ticket is None or ticket.claimed:
            return None
        ticket.claimed = True
        return ticket

    async def started(self, ticket: StreamTicket, stream_id: str) -> None:
        ticket.stream_id = stream_id
        ticket.body = None  # no second start: the request is not needed any more
        ticket.expires = time.monotonic() + self.resume_for
        self._tickets[ticket.digest] = ticket  # kept even if it expired meanwhile

    async def resumable(self, token: str) -> StreamTicket | None:
        ticket = self._live(token)
        return ticket if ticket is not None and ticket.stream_id is not None else None

    async def aclose(self) -> None:
        self._tickets.clear()

    def _live(self, token: str) -> StreamTicket | None:
        if not token.startswith(PREFIX):
            return None
        key = digest(token)
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
