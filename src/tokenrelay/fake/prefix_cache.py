"""The fake upstream as a provider's prompt cache (``cache=1`` on ``echo`` and ``gen/N``).

A provider caches a prompt's prefix on the machine that served it, so a conversation
whose turns reach one upstream key (one deployment) reads its earlier turns from the
cache, and one scattered over several keys pays for them again. The fake keeps, per
upstream key, the prefixes (at every turn boundary, system prompt first) of the
prompts it has served; a request's cache read is its longest prefix seen before on that
key, in the fake tokenizer's tokens (one per word).

Writes follow the providers: OpenAI, Gemini and the Responses API cache every prompt on
their own and report only reads. Anthropic caches only a prompt that carries
``cache_control`` (and nothing without it) and reports what it wrote: the prompt past
the part it read, as 1-hour writes when a ``cache_control`` says ``"ttl": "1h"``,
5-minute ones otherwise. Bounded: the oldest key is forgotten past ``keys``, a key's
prefixes are cleared past ``prefixes``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

from .cache_counts import CacheCounts
from .wire import Proto, turns, words


def upstream_key(headers: dict[str, str], query: str) -> str:
    """The credential a request came with: the cache's partition."""
    for name in ("authorization", "x-api-key", "x-goog-api-key"):
        if headers.get(name):
            return headers[name]
    for pair in query.split("&"):
        if pair.startswith("key="):
            return pair[4:]
    return ""


def _marks(value: Any) -> list[dict[str, Any]]:
    """Every ``cache_control`` object in a body, wherever it sits."""
    found: list[dict[str, Any]] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            mark = item.get("cache_control")
            if isinstance(mark, dict):
                found.append(mark)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


class PrefixCache:
    """Prefixes seen per upstream key, and the counts a new request earns."""

    def __init__(self, keys: int = 1024, prefixes: int = 100_000) -> None:
        self._keys = keys
        self._prefixes = prefixes
        self._seen: OrderedDict[str, set[bytes]] = OrderedDict()

    def serve(self, key: str, proto: Proto, body: dict[str, Any]) -> CacheCounts:
        """What the cache does for ``body`` on ``key``; remembers its prefixes."""
        marks = _marks(body) if proto == "anthropic" else []
        if proto == "anthropic" and not marks:
            return CacheCounts()  # Anthropic caches only what is marked
        digest = hashlib.sha256()
        prefixes: list[tuple[bytes, int]] = []
        total = 0
        for role, texts in turns(proto, body):
            digest.update(role.encode() + b"\x00")
            for text in texts:
                digest.update(text.encode() + b"\x01")
                total += words(text)
            digest.update(b"\x02")
            prefixes.append((digest.copy().digest(), total))
        seen = self._seen.pop(key, None)
        if seen is None:
            seen = set()
            while len(self._seen) >= self._keys:
                self._seen.popitem(last=False)
        self._seen[key] = seen
        read = max((size for h, size in prefixes if h in seen), default=0)
        if len(seen) + len(prefixes) > self._prefixes:
            seen.clear()
        seen.update(h for h, _ in prefixes)
        if proto != "anthropic":
            return CacheCounts(read=read)
        written = max(0, total - read)
        if any(m.get("ttl") == "1h" for m in marks):
            return CacheCounts(read=read, write_1h=written)
        return CacheCounts(read=read, write_5m=written)
