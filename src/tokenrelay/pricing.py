"""The price of a request: a table of USD per million tokens per model, one rate per
kind of token (input, output, cache read, 5-minute cache write, 1-hour cache write),
shipped defaults overridable in the configuration.

How a ``Usage`` is priced (its ``input`` includes cached and cache-write tokens, see
``events.Usage``; its ``output`` includes reasoning tokens, which every listed provider
bills as output):

    cost = (input - cached - cache_write) * input_price
         + cached * cached_input_price          (input_price when the table has none)
         + cache_write_5m * cache_write_price    (input_price when the table has none)
         + cache_write_1h * cache_write_1h_price (2 x input_price when the table has none)
         + output * output_price,  all / 1e6

A missing cached or 5-minute write price falls back to the input price, so an unknown
discount can only over-bill, never under-bill. A missing 1-hour write price falls back
to twice the input price: Anthropic, the one provider that sells 1-hour writes, documents
them as 2x the base input rate (its 5-minute writes as 1.25x, its reads as 0.1x). A model whose input or output price is
unknown has no cost (``None``): the usage row says so rather than inventing a number.
A ``long_context`` price replaces the base one for a request whose prompt (``input``)
exceeds ``long_context_above`` tokens.

Lookup of a routed name such as ``openai/gpt-4.1-2025-04-14``: the exact name, then the
name without its first ``provider/`` segment, then its last segment; at each step an
exact key wins over shell-style patterns (``?`` is one character), longest first.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

import msgspec

from .events import Usage

PRICES_TAKEN = "2026-11-21"
"""When the shipped prices were collected (from stored copies of the sources below)."""


class Price(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """USD per million tokens. ``None``: unknown (not sourced)."""

    input: float | None = None
    output: float | None = None
    cached_input: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None
    long_context_above: int | None = None
    long_context: Price | None = None
    source: str = ""
    note: str = ""

    @property
    def known(self) -> bool:
        return self.input is not None and self.output is not None


_OPENAI = (
    "OpenAI API pricing, developers.openai.com/api/docs/pricing (Standard tier), as recorded "
    "in simonw/llm-prices data/openai.json at commit 397ec5f (2026-07-30)"
)
_ANTHROPIC = (
    "platform.claude.com/docs/en/about-claude/pricing, model pricing table "
    "(base input, 5-minute cache writes, 1-hour cache writes, cache hits, output)"
)
_GOOGLE = (
    "Gemini API pricing, ai.google.dev/gemini-api/docs/pricing (Standard tier), as recorded "
    "in simonw/llm-prices data/google.json (2026-07-24)"
)
_XAI = "xAI API pricing, as recorded in simonw/llm-prices data/xai.json (2026-08-05)"
_MOONSHOT = (
    "Moonshot AI pricing, as recorded in simonw/llm-prices data/moonshot-ai.json (2025-11-07)"
)
_MISTRAL = "Mistral pricing, as recorded in simonw/llm-prices data/mistral.json (2025-10-10)"
_UNSOURCED = "UNSOURCED: no current published price found; set one in the config to bill it."


def _p(i: float, o: float, c: float | None, source: str, **extra: Any) -> Price:
    return Price(input=i, output=o, cached_input=c, source=source, **extra)


DEFAULT_PRICES: dict[str, Price] = {
    # OpenAI (catalog: openai/*). Dated snapshots share their alias's price.
    "gpt-4.1": _p(2.00, 8.00, 0.50, _OPENAI),
    "gpt-4.1-mini": _p(0.40, 1.60, 0.10, _OPENAI),
    "gpt-4o": _p(2.50, 10.00, 1.25, _OPENAI),
    "gpt-4o-mini": _p(0.15, 0.60, 0.075, _OPENAI),
    "o4-mini": _p(1.10, 4.40, 0.275, _OPENAI),
    "gpt-5": _p(1.25, 10.00, 0.125, _OPENAI),
    "gpt-5-mini": _p(
        0.25, 2.00, 0.025, _OPENAI, note="also on developers.openai.com/api/docs/models/gpt-5-mini"
    ),
    "gpt-4.1-????-??-??": _p(2.00, 8.00, 0.50, _OPENAI),
    "gpt-4.1-mini-????-??-??": _p(0.40, 1.60, 0.10, _OPENAI),
    "gpt-4o-????-??-??": _p(2.50, 10.00, 1.25, _OPENAI),
    "gpt-4o-mini-????-??-??": _p(0.15, 0.60, 0.075, _OPENAI),
    "o4-mini-????-??-??": _p(1.10, 4.40, 0.275, _OPENAI),
    "gpt-5-????-??-??": _p(1.25, 10.00, 0.125, _OPENAI),
    "gpt-5-mini-????-??-??": _p(0.25, 2.00, 0.025, _OPENAI),
    # Anthropic: ids with and without the date suffix.
    "claude-sonnet-4-5": _p(
        3.00,
        15.00,
        0.30,
        _ANTHROPIC,
        cache_write=3.75,
        cache_write_1h=6.00,
        long_context_above=200_000,
        long_context=Price(
            input=6.00,
            output=22.50,
            source="simonw/llm-prices data/anthropic.json (Sonnet 4/4.5 >200k, 2026-06-30)",
            note=(
                "cached/5-minute-write rates above 200k unsourced: billed at the input "
                "rate; 1-hour writes at 2x input (Anthropic's documented multiplier)"
            ),
        ),
    ),
    "claude-sonnet-4-5-????????": _p(
        3.00, 15.00, 0.30, _ANTHROPIC, cache_write=3.75, cache_write_1h=6.00
    ),
    "claude-opus-4-1": _p(15.00, 75.00, 1.50, _ANTHROPIC, cache_write=18.75, cache_write_1h=30.00),
    "claude-opus-4-1-????????": _p(
        15.00, 75.00, 1.50, _ANTHROPIC, cache_write=18.75, cache_write_1h=30.00
    ),
    "claude-haiku-4-5": _p(1.00, 5.00, 0.10, _ANTHROPIC, cache_write=1.25, cache_write_1h=2.00),
    "claude-haiku-4-5-????????": _p(
        1.00, 5.00, 0.10, _ANTHROPIC, cache_write=1.25, cache_write_1h=2.00
    ),
    # Google Gemini. 2.5 Pro has a higher tier for prompts over 200k tokens.
    "gemini-2.5-pro": _p(
        1.25,
        10.00,
        0.125,
        _GOOGLE,
        long_context_above=200_000,
        long_context=_p(2.50, 15.00, 0.25, _GOOGLE),
        note="context-cache storage (per hour) is not a token price and is not billed here",
    ),
    "gemini-2.5-flash": _p(0.30, 2.50, 0.03, _GOOGLE),
    "gemini-2.5-flash-lite": _p(0.10, 0.40, 0.01, _GOOGLE),
    # xAI.
    "grok-4": _p(
        3.00,
        15.00,
        0.75,
        _XAI,
        long_context_above=128_000,
        long_context=_p(6.00, 30.00, 0.75, _XAI),
    ),
    "grok-3-mini": _p(0.30, 0.50, 0.075, _XAI),
    # Moonshot.
    "kimi-k2-0905-preview": _p(0.60, 2.50, 0.15, _MOONSHOT),
    # Mistral: "-latest" aliases move to newer models.
    "mistral-small-latest": _p(
        0.10, 0.30, None, _MISTRAL, note="a moving alias (was Mistral Small 3.1); verify"
    ),
    "mistral-large-latest": Price(
        source=_UNSOURCED,
        note="sources disagree ($2/$6 for Large 24.11, $0.50/$1.50 for a later Large)",
    ),
    # DeepSeek retired these aliases on 2026-07-24; its prices are now peak/off-peak.
    "deepseek-chat": Price(
        source=_UNSOURCED,
        note="api-docs.deepseek.com: alias retired 2026-07-24; current prices vary by time of day",
    ),
    "deepseek-reasoner": Price(
        source=_UNSOURCED,
        note="api-docs.deepseek.com: alias retired 2026-07-24; current prices vary by time of day",
    ),
    # Groq and Alibaba (international): no current official price found.
    "llama-3.3-70b-versatile": Price(source=_UNSOURCED),
    "llama-3.1-8b-instant": Price(source=_UNSOURCED),
    "qwen-max": Price(source=_UNSOURCED, note="international (Singapore) USD price not found"),
    "qwen-plus": Price(source=_UNSOURCED, note="international (Singapore) USD price not found"),
    "qwen-turbo": Price(source=_UNSOURCED, note="international (Singapore) USD price not found"),
}


class PriceTable:
    """Prices by model name: the shipped ``DEFAULT_PRICES`` with ``overrides`` on top
    (each a ``Price`` or a mapping of its fields, e.g. from the YAML config)."""

    def __init__(
        self,
        overrides: Mapping[str, Price | Mapping[str, Any]] | None = None,
        *,
        defaults: Mapping[str, Price] | None = None,
    ) -> None:
        table = dict(DEFAULT_PRICES if defaults is None else defaults)
        for model, value in (overrides or {}).items():
            if not isinstance(value, Price):
                value = msgspec.convert(dict(value), Price)
            table[model] = value
        self.prices = table
        self._patterns = sorted(
            (k for k in table if any(ch in k for ch in "*?[")), key=len, reverse=True
        )
        self._found: dict[str, Price | None] = {}  # lookups made (bounded: names are free)

    def lookup(self, model: str) -> Price | None:
        """The price entry for ``model`` (see the module doc for the order), or ``None``."""
        try:
            return self._found[model]
        except KeyError:
            pass
        if len(self._found) >= 4096:
            self._found.clear()
        found = self._found[model] = self._search(model)
        return found

    def _search(self, model: str) -> Price | None:
        candidates = [model]
        if "/" in model:
            candidates += [model.split("/", 1)[1], model.rsplit("/", 1)[1]]
        for name in candidates:
            found = self.prices.get(name)
            if found is not None:
                return found
            for pattern in self._patterns:
                if fnmatchcase(name, pattern):
                    return self.prices[pattern]
        return None

    def cost(self, model: str, usage: Usage | None) -> float | None:
        """USD for ``usage`` on ``model``; ``None`` when the model has no known price."""
        price = self.lookup(model)
        if price is None or usage is None:
            return None if price is None or not price.known else 0.0
        return price_usage(price, usage)


def saved_by_cache(price: Price | None, usage: Usage | None) -> float | None:
    """USD the prompt cache saved on ``usage``: its cost with every cached and written
    token billed as plain input, less its real cost (negative when writes cost more
    than the reads saved). ``None`` without a known price."""
    if price is None or usage is None or not price.known:
        return None
    real = price_usage(price, usage)
    flat = price_usage(price, Usage(input=usage.input, output=usage.output))
    if real is None or flat is None:
        return None
    return flat - real


def price_usage(price: Price, usage: Usage) -> float | None:
    """USD for ``usage`` at ``price`` (its long-context tier when the prompt is long)."""
    if (
        price.long_context is not None
        and price.long_context_above is not None
        and usage.input > price.long_context_above
    ):
        price = price.long_context
    if price.input is None or price.output is None:
        return None
    cached = max(0, usage.cached)
    written = max(0, usage.cache_write)
    long_lived = min(written, max(0, usage.cache_write_1h))
    plain = max(0, usage.input - cached - written)
    cached_rate = price.input if price.cached_input is None else price.cached_input
    write_rate = price.input if price.cache_write is None else price.cache_write
    hour_rate = 2 * price.input if price.cache_write_1h is None else price.cache_write_1h
    total = (
        plain * price.input
        + cached * cached_rate
        + (written - long_lived) * write_rate
        + long_lived * hour_rate
        + max(0, usage.output) * price.output
    )
    return total / 1_000_000
