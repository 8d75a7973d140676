"""Who is calling: the master key, a virtual key, or nobody (open mode).

A credential is read from ``Authorization: Bearer <key>`` or ``x-api-key: <key>`` (the
OpenAI and the Anthropic way), or from the headers the client protocols declare
(``x-goog-api-key``, Gemini's; the server reads Gemini's ``?key=`` into it). Lookups are cached for ``cache_ttl`` seconds (found and
not-found alike, at most ``cache_size`` entries), so a request costs one SHA-256 and a
dictionary lookup; a revocation or rotation made by another process takes effect within
that time, or at once when it is announced (``invalidate()``: with Redis, every replica
hears of it, see ``revocations.py``). Status (revoked, expired) is judged on every
request against the clock, not cached.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..events import GatewayError
from ..limits.base import Limits
from .core import Store
from .db import DRIVER_ERRORS
from .keys import ApiKey, hash_secret, looks_like_key

_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def _auth_error(message: str, code: str) -> GatewayError:
    return GatewayError("authentication", message, status=401, code=code, headers=_UNAUTHORIZED)


def _store_away() -> GatewayError:
    return GatewayError(
        "overloaded",
        "The key store is unavailable; retry shortly.",
        status=503,
        code="key_store_unavailable",
        headers={"Retry-After": "1"},
    )


def _judged(key: ApiKey) -> Principal:
    """The principal of a found key, or a 401 for a revoked or expired one (judged
    against the clock on every request, never cached)."""
    status = key.status()
    if status == "revoked":
        raise _auth_error(f"The API key {key.prefix} has been revoked.", "key_revoked")
    if status == "expired":
        when = key.expires_at.isoformat() if key.expires_at else "?"
        raise _auth_error(f"The API key {key.prefix} expired at {when}Z.", "key_expired")
    return Principal(key=key)


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request. ``key`` is ``None`` for the master key and for open
    mode (no master key configured and no key sent)."""

    key: ApiKey | None = None
    master: bool = False

    @property
    def owner(self) -> str:
        """Who owns the streams this caller starts: ``key:<id>``, ``master`` or ``open``."""
        if self.key is not None:
            return f"key:{self.key.id}"
        return "master" if self.master else "open"

    @property
    def limits(self) -> Limits | None:
        return self.key.limits if self.key is not None else None

    def allows(self, model: str) -> bool:
        return self.key is None or self.key.allows(model)

    def visible(self, models: list[str]) -> list[str]:
        return list(models) if self.key is None else self.key.visible(models)

    def check_model(self, model: str) -> None:
        """Raise a 404 (as for a model that does not exist: a key does not learn which
        models it is denied) when this caller may not use ``model``."""
        if not self.allows(model):
            raise GatewayError(
                "not_found",
                f"The model {model!r} does not exist or this API key may not use it.",
                status=404,
                code="model_not_found",
                param="model",
            )


def credential(headers: Mapping[str, str], extra: tuple[str, ...] = ()) -> str | None:
    """The key a request carries, from ``Authorization: Bearer``, ``x-api-key`` or one
    of the ``extra`` headers (``headers`` looked up with lower-case names, as
    Starlette's ``Headers`` allow)."""
    value = headers.get("authorization")
    if value:
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    for header in ("x-api-key", *extra):
        value = headers.get(header)
        if value and value.strip():
            return value.strip()
    return None


class Authenticator:
    """Turns request headers into a ``Principal`` or a 401 ``GatewayError``."""

    def __init__(
        self,
        store: Store | None,
        master_key: str | None,
        *,
        cache_ttl: float = 5.0,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        headers: tuple[str, ...] = (),
    ) -> None:
        self.store = store
        self.headers = headers  # more headers a credential may come in (``credential``)
        self._master = hashlib.sha256(master_key.encode()).digest() if master_key else None
        self.cache_ttl = cache_ttl
        self.cache_size = cache_size
        self.clock = clock
        self._cache: OrderedDict[str, tuple[ApiKey | None, float]] = OrderedDict()
        self._generation = 0  # bumped by invalidate(): a lookup begun before is not kept

    @property
    def open_mode(self) -> bool:
        """No master key: requests without a key are let in (loopback use only)."""
        return self._master is None

    def is_master(self, secret: str | None) -> bool:
        """Constant-time comparison with the master key."""
        if secret is None or self._master is None:
            return False
        return hmac.compare_digest(hashlib.sha256(secret.encode()).digest(), self._master)

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        return await self.authenticate_secret(credential(headers, self.headers))

    async def authenticate_secret(self, secret: str | None) -> Principal:
        if secret is None:
            if self.open_mode:
                return Principal()
            raise _auth_error(
                "Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
                "missing_api_key",
            )
        if self.is_master(secret):
            return Principal(master=True)
        key = await self._lookup(secret)
        if key is None:
            if self.open_mode and not looks_like_key(secret):
                # the SDKs insist on sending some key: in open mode a placeholder will do;
                # one shaped like ours is refused (a typo, or a key that was deleted)
                return Principal()
            raise _auth_error("Invalid API key.", "invalid_api_key")
        return _judged(key)

    async def principal_of(self, owner: str) -> Principal:
        """The caller named by ``Principal.owner``, as it stands now (a stream token's,
        ``stream_tokens.py``): a key looked up by its id, not cached, so a key revoked
        or expired since is refused (401) as its secret would be."""
        if owner == "master" and self._master is not None:
            return Principal(master=True)
        if owner == "open" and self.open_mode:
            return Principal()
        key_id = owner.removeprefix("key:")
        if key_id == owner or self.store is None:
            raise _auth_error("The caller of this stream token is unknown.", "invalid_api_key")
        try:
            key = await self.store.get_key(key_id)
        except DRIVER_ERRORS:
            raise _store_away() from None
        if key is None:
            raise _auth_error("The API key of this stream token was deleted.", "invalid_api_key")
        return _judged(key)

    async def _lookup(self, secret: str) -> ApiKey | None:
        if self.store is None or not looks_like_key(secret):
            return None
        digest = hash_secret(secret)
        now = self.clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            self._cache.move_to_end(digest)
            return cached[0]
        generation = self._generation
        try:
            key = await self.store.find_key(secret)
        except DRIVER_ERRORS:
            # the key store is away longer than the cache holds: say so, retryably
            raise _store_away() from None
        if generation != self._generation:
            return key  # read while a change was announced: maybe from before it
        self._cache[digest] = (key, now + self.cache_ttl)
        self._cache.move_to_end(digest)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return key

    def invalidate(self) -> None:
        """Forget every cached lookup (after a revoke or rotate, here or announced)."""
        self._generation += 1
        self._cache.clear()
