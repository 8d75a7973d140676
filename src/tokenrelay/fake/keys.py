"""The key a request came with, as the fake upstream sees it: counted per key (by its last
4 characters, never the whole key), and refused by a naming convention so tests can make
one key of a channel fail:

- a key containing ``-429-N`` (or ``-429`` at its end) answers 429 with ``Retry-After: N``
  (default 1);
- a key containing ``-401`` or ``-403`` (followed by ``-`` or at its end) answers that
  status, as a revoked or forbidden key would.
"""

from __future__ import annotations

import re

_RATE = re.compile(r"-429(?:-(\d+(?:\.\d+)?))?(?:-|$)")
_DENIED = re.compile(r"-(401|403)(?:-|$)")


def key_of(headers: dict[str, str], query: str) -> str | None:
    """The API key of a request in any provider's place for it."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    for name in ("x-api-key", "x-goog-api-key"):
        if headers.get(name):
            return headers[name]
    for part in query.split("&"):
        if part.startswith("key="):
            return part[4:]
    return None


def tag(key: str) -> str:
    """How a key is logged and counted: its last 4 characters."""
    return "…" + key[-4:]


def refusal(key: str) -> tuple[int, str | None] | None:
    """``(status, Retry-After)`` the convention asks for, or ``None``: served."""
    denied = _DENIED.search(key)
    if denied is not None:
        return int(denied.group(1)), None
    rate = _RATE.search(key)
    if rate is not None:
        return 429, rate.group(1) or "1"
    return None
