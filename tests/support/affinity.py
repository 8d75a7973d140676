"""The conversation-affinity measurement: conversations of a few turns played through a
gateway whose model has two deployments of the fake upstream's prompt cache (``cache=1``,
per upstream key), or one deployment of a channel with two upstream keys. Used by
``tests/test_affinity_e2e.py``.

The fake's tokenizer counts words. A conversation's system prompt has ``SYSTEM_WORDS``
words, each user message ``USER_WORDS`` (and the echo answers the same), so turn ``k``
(from 1) sends ``SYSTEM_WORDS + USER_WORDS + 2 * USER_WORDS * (k - 1)`` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import openai

SYSTEM_WORDS = 100
USER_WORDS = 5
KEYS = {"ca": "sk-cache-deployment-a", "cb": "sk-cache-deployment-b"}
UPSTREAM = {"ca": "echo?cache=1&ttft=0.0001", "cb": "echo?cache=1&ttft=0.0002"}
CHANNEL_KEYS = ["sk-cache-channel-key-one1", "sk-cache-channel-key-two2"]


@dataclass(frozen=True)
class Conversations:
    count: int
    turns: int
    tag: str

    @staticmethod
    def providers(fake_url: str) -> list[dict[str, Any]]:
        """The two deployments: the fake upstream under two upstream keys."""
        return [
            {
                "name": name,
                "protocol": "openai",
                "base_url": f"{fake_url}/v1",
                "api_key": key,
                "models": ["*"],
            }
            for name, key in KEYS.items()
        ]

    @staticmethod
    def channel(fake_url: str) -> dict[str, Any]:
        """One deployment: the fake upstream as a channel of two upstream keys."""
        return {
            "name": "ck",
            "protocol": "openai",
            "base_url": f"{fake_url}/v1",
            "api_keys": CHANNEL_KEYS,
            "models": ["*"],
        }

    @staticmethod
    def models() -> list[dict[str, Any]]:
        deployments = [f"{name}/{UPSTREAM[name]}" for name in KEYS]
        keyed = ["ck/echo?cache=1&ttft=0.0003"]
        return [
            {"name": "warm", "deployments": deployments},
            {"name": "cold", "deployments": deployments, "affinity": False},
            {"name": "warm-keys", "deployments": keyed},
            {"name": "cold-keys", "deployments": keyed, "affinity": False},
        ]

    def renamed(self, suffix: str) -> Conversations:
        """The same shape of conversations with other texts (nothing cached yet)."""
        return replace(self, tag=f"{self.tag}{suffix}")

    def system(self, i: int) -> str:
        filler = " ".join(f"w{j}" for j in range(SYSTEM_WORDS - 2))
        return f"{self.tag} conversation{i} {filler}"

    def user(self, i: int, k: int) -> str:
        return f"question {k} of conversation {i}"


@dataclass
class Measured:
    prompt: int = 0
    cached: int = 0
    requests: int = 0
    deployments: set[str] = field(default_factory=set)
    keys: dict[str, set[str]] = field(default_factory=dict)  # conversation -> key tags

    @property
    def rate(self) -> float:
        return self.cached / self.prompt if self.prompt else 0.0


def play(client: openai.OpenAI, model: str, talks: Conversations, fake_url: str) -> Measured:
    """Play every conversation turn by turn (turn k of every conversation, then k + 1)
    and add up what the upstream said it read from its cache."""
    out = Measured()
    history: list[list[Any]] = [
        [{"role": "system", "content": talks.system(i)}] for i in range(talks.count)
    ]
    for k in range(1, talks.turns + 1):
        for i in range(talks.count):
            history[i].append({"role": "user", "content": talks.user(i, k)})
            reply = client.chat.completions.create(model=model, messages=history[i])
            usage = reply.usage
            assert usage is not None and usage.prompt_tokens_details is not None
            out.prompt += usage.prompt_tokens
            out.cached += usage.prompt_tokens_details.cached_tokens or 0
            out.requests += 1
            history[i].append({"role": "assistant", "content": reply.choices[0].message.content})
    log = httpx.get(f"{fake_url}/_fake/log", timeout=10).json()
    for entry in log:
        body = entry.get("body") or {}
        head = str(body.get("messages", ""))[:200]
        if talks.tag in head:
            out.deployments.add(str(body.get("model")))
            talk = head.split(talks.tag, 1)[1].split()[0]  # "conversation{i}"
            out.keys.setdefault(talk, set()).add(str(entry.get("key")))
    return out


def prompt_of(k: int) -> int:
    return SYSTEM_WORDS + USER_WORDS + 2 * USER_WORDS * (k - 1)


def ideal_rate(talks: Conversations) -> float:
    """Every turn after the first reads its whole previous prompt from the cache."""
    total = sum(prompt_of(k) for k in range(1, talks.turns + 1))
    return sum(prompt_of(k - 1) for k in range(2, talks.turns + 1)) / total


def expected_cold(talks: Conversations) -> float:
    """The expected rate when each turn goes to either deployment at random: turn k reads
    turn j's prompt when j was the last earlier turn on its deployment (chance 2^-(k-j))."""
    total = sum(prompt_of(k) for k in range(1, talks.turns + 1))
    read = sum(
        prompt_of(j) * 0.5 ** (k - j) for k in range(2, talks.turns + 1) for j in range(1, k)
    )
    return read / total


def expected_round_robin(talks: Conversations) -> float:
    """The rate when requests take two keys in turn: with an odd number of conversations
    played turn by turn, each turn lands on the other key than its previous one and
    reads the prompt of the turn before that (an even number would keep every
    conversation on one key by accident)."""
    assert talks.count % 2 == 1
    total = sum(prompt_of(k) for k in range(1, talks.turns + 1))
    return sum(prompt_of(k - 2) for k in range(3, talks.turns + 1)) / total
