"""Key changes told to every replica at once, through Redis pub/sub.

Key lookups are cached per process (``Authenticator``, ``auth_cache_ttl``). A revoke
or a rotate, whether made by ``tokenrelay keys`` on the database or by ``POST
/admin/keys/…`` on one replica, is published on channel ``tokenrelay:keys`` (the
message is the key id, or ``*``); every gateway sharing that Redis drops its cached
lookups when it hears one, so the change applies to the next request everywhere.
Without Redis (or while it is away) a change made elsewhere applies within
``auth_cache_ttl``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("tokenrelay.auth")

CHANNEL = "tokenrelay:keys"


async def announce(url: str, key_id: str, channel: str = CHANNEL) -> None:
    """Publish one key change (raises ``RedisError`` or ``OSError`` when Redis is away)."""
    client: Any = aioredis.from_url(url, socket_timeout=5)
    try:
        await client.publish(channel, key_id)
    finally:
        await client.aclose()


class KeyChanges:
    """One gateway's side: ``changed`` runs for every change heard; ``publish`` tells
    the others of a change made here."""

    def __init__(self, url: str, changed: Callable[[str], None], channel: str = CHANNEL) -> None:
        self.redis: Any = aioredis.from_url(url, socket_timeout=5)
        self.channel = channel  # also used for channel (provider) changes
        self.changed = changed
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._listener = asyncio.ensure_future(self._listen())

    async def _listen(self) -> None:
        missed = False
        while True:
            try:
                pubsub = self.redis.pubsub()
                await pubsub.subscribe(self.channel)
                if missed:  # a change made while not subscribed: forget everything
                    self.changed("*")
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.changed(message["data"].decode(errors="replace"))
            except (RedisError, OSError) as exc:
                log.warning("listening for key changes failed: %s", exc)
                missed = True
                await asyncio.sleep(1)

    def publish(self, key_id: str) -> None:
        task = asyncio.ensure_future(self._publish(key_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, key_id: str) -> None:
        try:
            await self.redis.publish(self.channel, key_id)
        except (RedisError, OSError) as exc:
            log.warning("telling the other replicas of a key change failed: %s", exc)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        await self.redis.aclose()
