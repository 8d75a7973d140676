"""Which ``anthropic-beta`` flags an Anthropic-protocol upstream is sent.

Claude Code and the ``anthropic`` SDK name a beta flag for each newer feature they use
(a dozen at a time). Anthropic's own API ignores a flag it does not know; Bedrock- and
Vertex-style endpoints, and other Anthropic-compatible ones, answer 400 to any flag they
do not know. So a provider says which flags it accepts (``anthropic_betas`` in its
configuration): ``["*"]`` all, a list of names (a trailing ``*`` matches a prefix), or
``[]`` none. Unset, it is all for Anthropic's own API (``api.anthropic.com``) and none
for any other base URL. A flag not accepted is left out of the header; the header is
left out when no flag is left. The provider's own configured ``headers`` are sent as
configured, whatever this says.
"""

from __future__ import annotations

from urllib.parse import urlsplit

ANTHROPIC_API_HOSTS = frozenset({"api.anthropic.com"})
"""Hosts that accept every beta flag by default."""

HEADER = "anthropic-beta"


class BetaFilter:
    """The accepted flags of one provider; ``None`` accepts every flag."""

    __slots__ = ("_exact", "_prefixes", "everything")

    def __init__(self, accepted: list[str] | None, base_url: str) -> None:
        if accepted is None:
            host = (urlsplit(base_url).hostname or "").lower()
            accepted = ["*"] if host in ANTHROPIC_API_HOSTS else []
        self.everything = "*" in accepted
        self._exact = frozenset(a for a in accepted if not a.endswith("*"))
        self._prefixes = tuple(a[:-1] for a in accepted if a.endswith("*") and a != "*")

    def accepts(self, flag: str) -> bool:
        return self.everything or flag in self._exact or flag.startswith(self._prefixes)

    def value(self, header: str) -> str | None:
        """The header's comma-separated flags that are accepted, or ``None`` if none is."""
        if self.everything:
            return header
        kept = [f for f in (p.strip() for p in header.split(",")) if f and self.accepts(f)]
        return ",".join(kept) or None

    def headers(self, client: dict[str, str]) -> dict[str, str]:
        """The client's forwarded headers with ``anthropic-beta`` filtered."""
        if self.everything:
            return client
        out: dict[str, str] = {}
        for name, value in client.items():
            if name.lower() == HEADER:
                kept = self.value(value)
                if kept is None:
                    continue
                value = kept
            out[name] = value
        return out
