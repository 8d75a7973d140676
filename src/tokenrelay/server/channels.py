"""The channels a gateway serves, swapped live: the config file's providers (read-only)
plus the enabled channels of the database (``store/channels.py``).

Every request reads ``gateway.router`` once; a change builds a whole new ``Router`` and
swaps it in one assignment, so a request sees the old set or the new one, never a mix.
A provider whose definition did not change is carried over, with its connection pool
and its keys' rests and disables; the deployments' breakers start afresh. A replaced
provider's pool is closed after ``RETIRE_AFTER`` seconds (streams still on it finish).

A change is heard three ways: made here (the admin API reloads before answering),
through Redis (``tokenrelay:channels``, published by the admin API and by ``tokenrelay
channels --redis-url``: within a second everywhere), or by polling the database every
``POLL_INTERVAL`` seconds (without Redis, or a message missed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config import ChannelLimitsConfig, Config, ProviderConfig, TimeoutsConfig
from ..providers.base import Provider
from ..router import Router
from ..store import DRIVER_ERRORS
from ..store.channels import Channel, ChannelStore
from ..store.secrets import NoSecretKey

if TYPE_CHECKING:
    from ..store.revocations import KeyChanges

log = logging.getLogger("tokenrelay.channels")

POLL_INTERVAL = 2.0
RETIRE_AFTER = 600.0
TOPIC = "tokenrelay:channels"

LiveProvider = tuple[ProviderConfig, list[tuple[str, str]], Any]  # config, keys, signature
Build = Callable[[Config, list[LiveProvider], dict[str, tuple[Any, Provider]]], Router]


def as_provider(channel: Channel) -> LiveProvider:
    """A database channel as the config's provider, its keys as (id, secret), and a
    signature that changes whenever it does."""
    s = channel.spec
    p = ProviderConfig(
        name=s.name,
        base_url=s.base_url,
        protocol=s.protocol,
        models=list(s.models),
        headers=dict(s.headers),
        timeouts=TimeoutsConfig(**s.timeouts),
        images=s.images,
        weight=s.weight,
        limits=ChannelLimitsConfig(**s.limits),
    )
    keys = [(k.id, k.secret) for k in channel.keys if k.secret is not None]
    return p, keys, ("db", channel.id, str(channel.updated_at))


class ChannelRegistry:
    def __init__(self, config: Config, build: Build, swap: Callable[[Router], None]) -> None:
        self.config = config
        self._build = build
        self._swap = swap
        self.store: ChannelStore | None = None
        self.made: dict[str, tuple[Any, Provider]] = {}  # name -> (signature, provider)
        self.live: list[Channel] = []  # as last loaded (keys without secrets)
        self.problems: dict[str, str] = {}  # channel name -> why it is not served
        self._version: object = None
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._retired: list[Provider] = []
        self.changes: KeyChanges | None = None

    def first(self) -> Router:
        """The router of the config file alone (before the database is open)."""
        return self._build(self.config, [], self.made)

    async def start(self, store: ChannelStore) -> None:
        self.store = store
        await self.reload()
        if self.config.redis_url:
            from ..store.revocations import KeyChanges

            self.changes = KeyChanges(self.config.redis_url, self._heard, TOPIC)
            self.changes.start()
        self._poller = asyncio.ensure_future(self._poll())

    def _heard(self, what: str) -> None:
        task = asyncio.ensure_future(self._reload_heard())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def changed(self) -> None:
        """A change was made here (already reloaded): tell the other replicas."""
        if self.changes is not None:
            self.changes.publish("*")

    async def _reload_heard(self) -> None:
        try:
            await self.reload()
        except DRIVER_ERRORS as exc:  # the poll tries again
            log.warning("reloading the channels failed: %s", exc)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                if self.store is not None and await self.store.version() != self._version:
                    await self.reload()
            except DRIVER_ERRORS as exc:  # the database away: the channels in force stay
                log.warning("polling the channels failed: %s", exc)

    async def reload(self) -> None:
        """Read the database's channels and swap in a router that serves them."""
        if self.store is None:
            return
        async with self._lock:
            version = await self.store.version()
            channels = await self.store.all()
            taken = {p.name for p in self.config.providers}
            problems: dict[str, str] = {}
            live = []
            try:
                loaded = {c.id: c for c in await self.store.all(with_secrets=True)}
            except NoSecretKey as exc:
                loaded = {c.id: c for c in channels if not c.keys}
                for c in channels:
                    if c.keys:
                        problems[c.spec.name] = str(exc)
            for c in channels:
                if c.spec.name in taken:
                    problems[c.spec.name] = "the config file has a provider of this name"
                elif c.spec.enabled and c.id in loaded:
                    live.append(as_provider(loaded[c.id]))
            for name, why in problems.items():
                log.warning("channel %s is not served: %s", name, why)
            before = dict(self.made)
            router = self._build(self.config, live, self.made)
            self._swap(router)
            self.live, self.problems, self._version = channels, problems, version
            for name, (_, provider) in before.items():
                if self.made.get(name, (None, None))[1] is not provider:
                    self._retire(provider)
            log.info("channels loaded: %d from the database, %d served", len(channels), len(live))

    def _retire(self, provider: Provider) -> None:
        self._retired.append(provider)

        async def later() -> None:
            await asyncio.sleep(RETIRE_AFTER)
            self._retired.remove(provider)
            await provider.aclose()

        task = asyncio.ensure_future(later())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        if self.changes is not None:
            await self.changes.aclose()
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        for provider in self._retired:
            await provider.aclose()
