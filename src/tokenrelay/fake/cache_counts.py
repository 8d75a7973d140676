"""What the fake's prompt cache did for one request, and how each wire reports it.

Each provider reports a cache in its own fields and its own convention: OpenAI
(``prompt_tokens_details.cached_tokens``) and Gemini (``cachedContentTokenCount``) and
the Responses API (``input_tokens_details.cached_tokens``) count the cached tokens
inside the prompt count; Anthropic counts reads and writes apart from ``input_tokens``
and splits the writes by lifetime (``cache_creation``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class CacheCounts:
    """Prompt tokens read from the cache and written to it (5-minute, 1-hour)."""

    read: int = 0
    write_5m: int = 0
    write_1h: int = 0

    @property
    def written(self) -> int:
        return self.write_5m + self.write_1h


NO_CACHE = CacheCounts()


def openai_usage(prompt: int, output: int, cache: CacheCounts) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
    }
    if cache is not NO_CACHE:
        usage["prompt_tokens_details"] = {"cached_tokens": cache.read}
    return usage


def anthropic_input(prompt: int, cache: CacheCounts) -> dict[str, Any]:
    """The input side of an Anthropic ``usage`` (the prompt less what the cache held)."""
    if cache is NO_CACHE:
        return {"input_tokens": prompt}
    return {
        "input_tokens": max(0, prompt - cache.read - cache.written),
        "cache_creation_input_tokens": cache.written,
        "cache_read_input_tokens": cache.read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache.write_5m,
            "ephemeral_1h_input_tokens": cache.write_1h,
        },
    }


def gemini_usage(prompt: int, output: int, cache: CacheCounts) -> dict[str, int]:
    usage = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": output,
        "totalTokenCount": prompt + output,
    }
    if cache.read:
        usage["cachedContentTokenCount"] = cache.read
    return usage
