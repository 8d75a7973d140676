"""Single-stream tokens kept in Redis (with ``redis_url``): a token minted by one
worker or replica starts its stream, or re-attaches to it, on any other.

One hash per token, ``tokenrelay:stream-token:<SHA-256 of the token>`` (never the token
itself): ``owner`` (``Principal.owner``: a key's id, never a secret), ``body`` (the
prepared request, when there is one), ``claimed``, ``stream``. Written with ``PEXPIRE
ttl``, so an unused token vanishes by Redis's clock. The claim is one Lua script
(``EXISTS``, then ``HSETNX claimed``): Redis runs it alone, so of any number of GETs on
any number of processes exactly one starts the stream, and an expired record is never
re-created. ``started`` rewrites the record as ``owner`` + ``stream`` (the body is not
needed again) with ``PEXPIRE resume_for``.

When Redis cannot be reached every operation is a retryable 503 (the token is not
lost: its record is where it was).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from ..events import GatewayError
from .stream_tokens import PREFIX, StreamTicket, digest, new_token

KEY_PREFIX = "tokenrelay:stream-token:"
SOCKET_TIMEOUT = 5.0  # as the other Redis clients (revocations.py, redis_mirror.py)

# KEYS: the record. Returns {owner, body} of a live, unclaimed record, now claimed.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if redis.call('HSETNX', KEYS[1], 'claimed', '1') == 0 then return false end
return redis.call('HMGET', KEYS[1], 'owner', 'body')
"""


def _unavailable() -> GatewayError:
    return GatewayError(
        "overloaded",
        "The stream token store is unavailable; retry shortly.",
        status=503,
        code="stream_token_store_unavailable",
        headers={"Retry-After": "1"},
    )


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class RedisStreamTokens:
    def __init__(self, url: str, ttl: float = 60.0, resume_for: float = 300.0) -> None:
        self.ttl = ttl
        self.resume_for = resume_for
        # Typed as Any, as in redis_mirror.py: redis-py's replies are unions of RESP shapes
        self.redis: Any = aioredis.from_url(url, socket_timeout=SOCKET_TIMEOUT)
        self._claim_sha: str | None = None

    async def mint(self, owner: str, body: bytes | None) -> str:
        token = new_token()
        record: dict[str, str | bytes] = {"owner": owner}
        if body is not None:
            record["body"] = body
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(KEY_PREFIX + digest(token), mapping=record)
                pipe.pexpire(KEY_PREFIX + digest(token), _ms(self.ttl))
                await pipe.execute()
        except (RedisError, OSError):
            raise _unavailable() from None
        return token

    async def claim(self, token: str) -> StreamTicket | None:
        if not token.startswith(PREFIX):
            return None
        key = digest(token)
        try:
            found = await self._run_claim(KEY_PREFIX + key)
        except (RedisError, OSError):
            raise _unavailable() from None
        if not found:
            return None
        owner, body = found
        if owner is None:
            return None
        return StreamTicket(_text(owner) or "", body, key, claimed=True)

    async def _run_claim(self, name: str) -> Any:
        if self._claim_sha is None:
            self._claim_sha = await self.redis.script_load(_CLAIM)
        try:
            return await self.redis.evalsha(self._claim_sha, 1, name)
        except NoScriptError:  # Redis restarted or flushed its scripts: load, once more
            self._claim_sha = await self.redis.script_load(_CLAIM)
            return await self.redis.evalsha(self._claim_sha, 1, name)

    async def started(self, ticket: StreamTicket, stream_id: str) -> None:
        ticket.stream_id = stream_id
        name = KEY_PREFIX + ticket.digest
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(
                    name, mapping={"owner": ticket.owner, "claimed": "1", "stream": stream_id}
                )
                pipe.hdel(name, "body")
                pipe.pexpire(name, _ms(self.resume_for))
                await pipe.execute()
        except (RedisError, OSError):
            raise _unavailable() from None

    async def resumable(self, token: str) -> StreamTicket | None:
        if not token.startswith(PREFIX):
            return None
        key = digest(token)
        try:
            owner, stream = await self.redis.hmget(KEY_PREFIX + key, "owner", "stream")
        except (RedisError, OSError):
            raise _unavailable() from None
        if owner is None or stream is None:
            return None
        return StreamTicket(_text(owner) or "", None, key, stream_id=_text(stream), claimed=True)

    async def aclose(self) -> None:
        await self.redis.aclose()


def _ms(seconds: float) -> int:
    """An expiry for ``PEXPIRE``: whole milliseconds, at least one."""
    return max(1, round(seconds * 1000))
