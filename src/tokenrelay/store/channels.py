"""Channels managed live: providers kept in the database (``channels``) with their
upstream keys (``channel_keys``, encrypted by ``secrets.SecretBox``).

A change bumps the channel's ``updated_at``; gateways reload when told through Redis
(``tokenrelay:channels``) or when their poll of ``version()`` sees a new value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ..config import CHANNEL_LIMITS
from ..ids import token_hex
from ..protocols.registry import REGISTRY
from .keys import utcnow
from .schema import channel_keys, channels
from .secrets import SecretBox

TIMEOUT_NAMES = ("connect", "first_token", "idle", "total")
MAX_KEYS = 100
MAX_WEIGHT = 1e6


class ChannelNotFound(LookupError):
    """No channel has that name."""


class ChannelExists(ValueError):
    """A channel of that name exists already."""


@dataclass(slots=True)
class ChannelSpec:
    """What a channel is (keys apart). ``ValueError`` names the bad field."""

    name: str
    base_url: str
    protocol: str = "openai"
    models: list[str] = field(default_factory=lambda: ["*"])
    headers: dict[str, str] = field(default_factory=dict)
    timeouts: dict[str, float] = field(default_factory=dict)
    images: bool = True
    enabled: bool = True
    weight: float = 1.0  # its share where several channels serve a model (router.py)
    limits: dict[str, int] = field(default_factory=dict)  # rpm, max_concurrent

    def check(self) -> ChannelSpec:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,100}", self.name) or self.name == "local":
            raise ValueError(f"name: {self.name!r} may use only letters, digits, '_', '.', '-'")
        if not self.base_url.startswith(("http://", "https://")) or len(self.base_url) > 2000:
            raise ValueError("base_url: must start with http:// or https://")
        if self.protocol not in (known := REGISTRY.upstream_names()):
            raise ValueError(f"protocol: {self.protocol!r} is not one of {', '.join(known)}")
        if not self.models or not all(isinstance(m, str) and m.strip() for m in self.models):
            raise ValueError("models: list at least one model, or '*' for any")
        for name, value in self.timeouts.items():
            if name not in TIMEOUT_NAMES or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"timeouts.{name}: one of {', '.join(TIMEOUT_NAMES)}, > 0")
        for name, value in self.limits.items():
            if name not in CHANNEL_LIMITS:
                raise ValueError(f"limits.{name}: one of {', '.join(CHANNEL_LIMITS)}")
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**31:
                raise ValueError(f"limits.{name}: a whole number from 1")
        if isinstance(self.weight, bool) or not 0 < self.weight <= MAX_WEIGHT:
            raise ValueError(f"weight: must be a number above 0, at most {MAX_WEIGHT:g}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.headers.items()):
            raise ValueError("headers: names and values must be strings")
        return self


@dataclass(slots=True)
class ChannelKey:
    id: str
    last4: str  # how it is shown: "…" + these
    secret: str | None = field(default=None, repr=False)  # only when loaded for serving


@dataclass(slots=True)
class Channel:
    id: str
    spec: ChannelSpec
    keys: list[ChannelKey]
    created_at: datetime
    updated_at: datetime


class ChannelStore:
    def __init__(self, engine: AsyncEngine, box: SecretBox) -> None:
        self.engine = engine
        self.box = box

    async def version(self) -> tuple[int, int, str]:
        """Changes whenever any channel or key is created, changed or deleted."""
        async with self.engine.connect() as conn:
            n, latest = (
                await conn.execute(select(func.count(), func.max(channels.c.updated_at)))
            ).one()
            k = (await conn.execute(select(func.count()).select_from(channel_keys))).scalar()
        return int(n), int(k or 0), str(latest)

    async def all(self, with_secrets: bool = False) -> list[Channel]:
        """Every channel by name; ``with_secrets``: keys decrypted (``NoSecretKey``
        if they cannot be)."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(channels).order_by(channels.c.name))).all()
            key_rows = (
                await conn.execute(select(channel_keys).order_by(channel_keys.c.created_at))
            ).all()
        keys: dict[str, list[ChannelKey]] = {}
        for k in key_rows:
            m = k._mapping
            secret = self.box.open(m["secret"]) if with_secrets else None
            keys.setdefault(m["channel_id"], []).append(ChannelKey(m["id"], m["last4"], secret))
        return [_channel(r._mapping, keys.get(r._mapping["id"], [])) for r in rows]

    async def get(self, name: str) -> Channel:
        for channel in await self.all():
            if channel.spec.name == name:
                return channel
        raise ChannelNotFound(name)

    async def create(self, spec: ChannelSpec, secrets: list[str]) -> Channel:
        spec.check()
        sealed = self._sealed(secrets)
        now = utcnow()
        channel_id = "ch_" + token_hex(8)
        async with self.engine.begin() as conn:
            taken = (
                await conn.execute(select(channels.c.id).where(channels.c.name == spec.name))
            ).first()
            if taken is not None:
                raise ChannelExists(f"name: a channel named {spec.name!r} exists already")
            await conn.execute(
                channels.insert().values(
                    id=channel_id, **_values(spec), created_at=now, updated_at=now
                )
            )
            await self._insert_keys(conn, channel_id, sealed, now)
        return await self.get(spec.name)

    async def update(
        self, name: str, changes: dict[str, Any], secrets: list[str] | None = None
    ) -> Channel:
        """Change fields of a channel (``changes`` by ``ChannelSpec`` field); ``secrets``
        given: they replace its keys."""
        current = await self.get(name)
        spec = ChannelSpec(**{**_values(current.spec), **changes}).check()
        sealed = self._sealed(secrets) if secrets is not None else None
        now = utcnow()
        async with self.engine.begin() as conn:
            if spec.name != name:
                taken = (
                    await conn.execute(select(channels.c.id).where(channels.c.name == spec.name))
                ).first()
                if taken is not None:
                    raise ChannelExists(f"name: a channel named {spec.name!r} exists already")
            await conn.execute(
                update(channels)
                .where(channels.c.id == current.id)
                .values(**_values(spec), updated_at=now)
            )
            if sealed is not None:
                await conn.execute(
                    delete(channel_keys).where(channel_keys.c.channel_id == current.id)
                )
                await self._insert_keys(conn, current.id, sealed, now)
        return await self.get(spec.name)

    async def add_key(self, name: str, secret: str) -> Channel:
        current = await self.get(name)
        sealed = self._sealed([secret])
        async with self.engine.begin() as conn:
            await self._insert_keys(conn, current.id, sealed, utcnow())
            await conn.execute(
                update(channels).where(channels.c.id == current.id).values(updated_at=utcnow())
            )
        return await self.get(name)

    async def remove_key(self, name: str, key_id: str) -> Channel:
        current = await self.get(name)
        if key_id not in {k.id for k in current.keys}:
            raise ChannelNotFound(f"{name} has no key {key_id}")
        async with self.engine.begin() as conn:
            await conn.execute(delete(channel_keys).where(channel_keys.c.id == key_id))
            await conn.execute(
                update(channels).where(channels.c.id == current.id).values(updated_at=utcnow())
            )
        return await self.get(name)

    async def delete(self, name: str) -> None:
        current = await self.get(name)
        async with self.engine.begin() as conn:
            await conn.execute(delete(channel_keys).where(channel_keys.c.channel_id == current.id))
            await conn.execute(delete(channels).where(channels.c.id == current.id))

    def _sealed(self, secrets: list[str]) -> list[tuple[str, str]]:
        if len(secrets) > MAX_KEYS:
            raise ValueError(f"api_keys: at most {MAX_KEYS}")
        if any(not isinstance(s, str) or not s.strip() for s in secrets):
            raise ValueError("api_keys: each key must be a non-empty string")
        return [(self.box.seal(s.strip()), s.strip()[-4:]) for s in secrets]

    @staticmethod
    async def _insert_keys(
        conn: Any, channel_id: str, sealed: list[tuple[str, str]], now: datetime
    ) -> None:
        for secret, last4 in sealed:
            await conn.execute(
                channel_keys.insert().values(
                    id="ck_" + token_hex(8),
                    channel_id=channel_id,
                    secret=secret,
                    last4=last4,
                    created_at=now,
                )
            )


def _values(spec: ChannelSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "protocol": spec.protocol,
        "base_url": spec.base_url,
        "models": list(spec.models),
        "headers": dict(spec.headers),
        "timeouts": dict(spec.timeouts),
        "images": spec.images,
        "enabled": spec.enabled,
        "weight": float(spec.weight),
        "limits": dict(spec.limits),
    }


def _channel(m: Any, keys: list[ChannelKey]) -> Channel:
    spec = ChannelSpec(
        name=m["name"],
        base_url=m["base_url"],
        protocol=m["protocol"],
        models=list(m["models"]),
        headers=dict(m["headers"]),
        timeouts=dict(m["timeouts"]),
        images=bool(m["images"]),
        enabled=bool(m["enabled"]),
        weight=float(m["weight"]),
        limits=dict(m["limits"] or {}),
    )
    return Channel(m["id"], spec, keys, m["created_at"], m["updated_at"])
