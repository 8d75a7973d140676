"""Prompt-cache breakpoints on text, read from one wire and written to another.

Anthropic caches only what a ``cache_control`` marks (``{"type": "ephemeral"}``, with
``"ttl": "1h"`` for a one-hour entry); OpenAI, Gemini and the Responses API cache every
prompt by themselves. A client of another protocol may still mark a text content part
with the same ``cache_control`` (OpenRouter's convention on OpenAI content parts;
accepted on Responses ``input_text`` parts too): the canon keeps it as
``TextPart.cache`` (``"5m"`` or ``"1h"``), the Anthropic encoder writes it back, every
other target drops it (``docs/translation.md``).
"""

from __future__ import annotations

from typing import Any

OPENAI_FIELDS = ("prompt_cache_key", "prompt_cache_retention")
"""OpenAI's request-level cache fields, on Chat Completions and Responses alike."""


def hint_of(part: dict[str, Any]) -> str | None:
    """``"1h"`` or ``"5m"`` for a part carrying a ``cache_control``; ``None`` without one."""
    mark = part.get("cache_control")
    if not isinstance(mark, dict):
        return None
    return "1h" if mark.get("ttl") == "1h" else "5m"


def cache_control(hint: str) -> dict[str, str]:
    """The Anthropic ``cache_control`` for a canonical hint."""
    return {"type": "ephemeral", "ttl": "1h"} if hint == "1h" else {"type": "ephemeral"}


def text_field(body: dict[str, Any], key: str) -> str | None:
    """``body[key]`` when it is a string (an OpenAI cache field, for the canon)."""
    value = body.get(key)
    return value if isinstance(value, str) else None
