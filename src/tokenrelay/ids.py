"""Random identifiers (request and stream ids) without a system call each.

``secrets.token_*`` read the kernel's random source for every id: two ``getrandom``
calls per request on the request path. The same source is read here 4 KiB at a time,
and each id takes its bytes from that pool: ids as unpredictable as ``secrets``'s, one
system call per ~200 ids. A forked child starts with an empty pool (``register_at_fork``),
so a parent and its child never hand out the same id.
"""

from __future__ import annotations

import base64
import os

_POOL_SIZE = 4096
_pool = b""
_at = 0


def _clear() -> None:
    global _pool, _at
    _pool, _at = b"", 0


os.register_at_fork(after_in_child=_clear)


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the operating system's random source (``os.urandom``)."""
    global _pool, _at
    if _at + n > len(_pool):
        _pool, _at = os.urandom(max(_POOL_SIZE, n)), 0
    out = _pool[_at : _at + n]
    _at += n
    return out


def token_hex(n: int) -> str:
    """Like ``secrets.token_hex(n)``."""
    return random_bytes(n).hex()


def token_urlsafe(n: int) -> str:
    """Like ``secrets.token_urlsafe(n)``."""
    return base64.urlsafe_b64encode(random_bytes(n)).rstrip(b"=").decode("ascii")
