"""Virtual API keys: what a key is, how its secret is made, hashed and shown, and which
models it may use.

A secret is a prefix (``sk-`` by default, the shape clients and tutorials expect; the
``key_prefix`` setting) followed by 40 URL-safe random characters (240 bits). Keys made
with another prefix (``tr-``, before ``sk-`` became the default) keep working. Only its
SHA-256 is stored: a fast hash is right for high-entropy random secrets (there is
nothing to brute-force, so a slow password hash would only cost every request CPU), and
it lets the key be found by an indexed equality lookup. The found row's hash is then
compared again with ``hmac.compare_digest``. Humans see only a short ``prefix`` such as
``sk-AbCd…wXyZ`` (the prefix and 4 characters, then the last 4: 48 of 240 bits).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from ..ids import token_hex
from ..limits.base import BUDGET_PERIODS, Limits
from ..limits.fields import LIMIT_FIELDS, LIMIT_NAMES

SECRET_PREFIX = "sk-"  # the default for new keys
SECRET_CHARS = 40
PREFIX_PATTERN = r"[A-Za-z][A-Za-z0-9_]{0,11}-"  # what a configured prefix may be
_KEY_SHAPE = re.compile(PREFIX_PATTERN + r"[A-Za-z0-9_\-]{" + str(SECRET_CHARS) + "}")
MAX_NAME = 200
MAX_MODELS = 1000
MAX_MODEL_PATTERN = 200


def utcnow() -> datetime:
    """Now as the store keeps times: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


BLANK = " \t\n\r\x0b\x0c"
"""What a name may not consist of only: ASCII whitespace (the same class in Python and
JSON Schema regexes, so the admin API's published pattern means exactly this)."""


def as_utc(value: datetime) -> datetime:
    """``value`` as naive UTC (an aware datetime is converted; a naive one is UTC). A
    time whose UTC equivalent falls outside years 1-9999 is clamped to the limit."""
    if value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        ahead = (value.utcoffset() or timedelta()) < timedelta()
        return datetime.max if ahead else datetime.min


def new_secret(prefix: str = SECRET_PREFIX) -> str:
    # A credential, not an id: straight from ``secrets``, never from the ids' pool.
    return prefix + secrets.token_urlsafe(30)


def check_prefix(prefix: str) -> str:
    """``prefix`` if it can start a key (a letter, up to 11 more letters, digits or
    ``_``, then ``-``); ``ValueError`` otherwise."""
    if not re.fullmatch(PREFIX_PATTERN, prefix):
        raise ValueError(
            f"key_prefix: {prefix!r} must look like 'sk-' (letters, digits, '_', then '-')"
        )
    return prefix


def new_key_id() -> str:
    return "key_" + token_hex(8)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def display_prefix(secret: str) -> str:
    return f"{secret[: len(secret) - SECRET_CHARS + 4]}…{secret[-4:]}"


def looks_like_key(secret: str) -> bool:
    """Whether ``secret`` has the shape of a tokenrelay key, whatever prefix it was
    made with (cheap pre-check before the lookup)."""
    return _KEY_SHAPE.fullmatch(secret) is not None


def model_allowed(patterns: list[str] | None, model: str) -> bool:
    """Whether ``model`` matches the allow-list. ``None`` allows every model; an empty
    list allows none. Patterns are shell-style (``openai/*``, ``*-mini``), case-sensitive."""
    if patterns is None:
        return True
    return any(p == model or fnmatchcase(model, p) for p in patterns)


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What a new key may do. ``ValueError`` names the bad field."""

    name: str
    models: list[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    budget_usd: float | None = None
    budget_period: str = "monthly"
    expires_at: datetime | None = None

    def __post_init__(self) -> None:
        if not self.name.strip(BLANK) or len(self.name) > MAX_NAME:
            raise ValueError(f"name: must be 1 to {MAX_NAME} characters, not only spaces")
        if self.models is not None:
            if len(self.models) > MAX_MODELS:
                raise ValueError(f"models: at most {MAX_MODELS} entries")
            for m in self.models:
                if not m.strip(BLANK) or len(m) > MAX_MODEL_PATTERN:
                    raise ValueError(
                        f"models: each entry must be 1 to {MAX_MODEL_PATTERN} characters"
                    )
        for limit in LIMIT_FIELDS:
            problem = limit.problem(getattr(self, limit.name))
            if problem is not None:
                raise ValueError(problem)
        if self.budget_period not in BUDGET_PERIODS:
            raise ValueError(f"budget_period: must be one of {', '.join(BUDGET_PERIODS)}")
        if self.expires_at is not None:
            object.__setattr__(self, "expires_at", as_utc(self.expires_at))


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key (never its secret)."""

    id: str
    name: str
    prefix: str
    models: list[str] | None
    rpm: int | None
    tpm: int | None
    max_concurrent: int | None
    budget_usd: float | None
    budget_period: str
    expires_at: datetime | None
    created_at: datetime
    revoked_at: datetime | None = None
    hash: str = field(default="", repr=False)

    @classmethod
    def from_row(cls, row: Any) -> ApiKey:
        m = row._mapping
        return cls(
            id=m["id"],
            name=m["name"],
            prefix=m["prefix"],
            models=list(m["models"]) if m["models"] is not None else None,
            **{name: m[name] for name in LIMIT_NAMES},
            budget_period=m["budget_period"],
            expires_at=m["expires_at"],
            created_at=m["created_at"],
            revoked_at=m["revoked_at"],
            hash=m["hash"],
        )

    def status(self, now: datetime | None = None) -> str:
        """``active``, ``revoked`` or ``expired``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or utcnow()):
            return "expired"
        return "active"

    def allows(self, model: str) -> bool:
        return model_allowed(self.models, model)

    def visible(self, models: list[str]) -> list[str]:
        """The subset of ``models`` this key may use, in order (for ``/v1/models``)."""
        return [m for m in models if self.allows(m)]

    @property
    def limits(self) -> Limits:
        values = {name: getattr(self, name) for name in LIMIT_NAMES}
        return Limits(**values, budget_period=self.budget_period)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of the admin API and ``keys list --json``."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat(timespec="seconds") + "Z" if value is not None else None

        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "models": self.models,
            **{name: getattr(self, name) for name in LIMIT_NAMES},
            "budget_period": self.budget_period,
            "expires_at": iso(self.expires_at),
            "created_at": iso(self.created_at),
            "revoked_at": iso(self.revoked_at),
            "status": self.status(),
        }


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A key and its secret, which exists only here: show it once."""

    key: ApiKey
    secret: str = field(repr=False)
