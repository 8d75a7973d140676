"""Conversations kept on one deployment keep the provider's prompt cache warm: measured.

Two deployments of the fake upstream (one fake process, two upstream keys: the fake's
prompt cache, ``cache=1``, is per key, as a provider's is per machine or per account),
behind one model name with affinity (``warm``) and one without (``cold``: the least
loaded deployment, ties at random). The same conversations, each of a few turns, are
played against both through the official ``openai`` SDK; the hit rate is the share of
prompt tokens the upstream reported as cached (``prompt_tokens_details.cached_tokens``).

With affinity every turn after the first finds its whole previous prompt cached, so
the hit rate is the ideal one, computed below from the fake's tokenizer. Without it a
turn lands on the other deployment half of the time and finds less there; its expected
figure is far lower (about 0.40 for these conversations, see ``expected_cold``). The
test asserts the warm figure at 95 % of the ideal, far from the cold expectation, and
the figures in ``bench/RESULTS.md`` are the ones this test prints
(``pytest -s tests/test_affinity_e2e.py``).

The same holds for one deployment whose channel has two upstream keys (``warm-keys``,
``cold-keys``): with affinity each conversation keeps one key (the fake counts which
key each request came with), without it the keys take turns.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from support.affinity import (
    CHANNEL_KEYS,
    Conversations,
    expected_cold,
    expected_round_robin,
    ideal_rate,
    play,
)
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def gateway(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    config = gateway_config(fake, models=Conversations.models())
    config["providers"] += Conversations.providers(fake.base_url)
    config["providers"].append(Conversations.channel(fake.base_url))
    config["database_url"] = f"sqlite:///{workdir}/affinity-{time.monotonic_ns()}.db"
    gw = start_gateway(workdir, config)
    yield gw
    gw.proc.stop()


def test_affinity_keeps_the_prompt_cache_warm(gateway: Gateway, fake: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    talks = Conversations(count=10, turns=3, tag=f"t{time.monotonic_ns()}")
    warm = play(client, "warm", talks, fake.base_url)
    cold = play(client, "cold", talks.renamed("cold"), fake.base_url)
    ideal = ideal_rate(talks)
    print(  # the figures of bench/RESULTS.md ("pytest -s tests/test_affinity_e2e.py")
        f"\ncache hit rate, {talks.count} conversations x {talks.turns} turns, 2 deployments:"
        f" with affinity {warm.rate:.3f} ({warm.cached}/{warm.prompt} tokens),"
        f" without {cold.rate:.3f} ({cold.cached}/{cold.prompt}),"
        f" ideal {ideal:.3f}, expected at random {expected_cold(talks):.3f}"
    )
    # with affinity: every later turn reads its whole previous prompt, on either model
    assert warm.rate >= 0.95 * ideal, (warm, ideal)
    assert warm.rate > expected_cold(talks) + 0.15, (warm, cold)
    # and both deployments were used (affinity spreads conversations, it does not pin)
    assert len(warm.deployments) == 2, warm
    assert cold.rate < warm.rate, (warm, cold)


def test_affinity_keeps_a_conversation_on_one_upstream_key(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    talks = Conversations(count=9, turns=3, tag=f"k{time.monotonic_ns()}")
    warm = play(client, "warm-keys", talks, fake.base_url)
    cold = play(client, "cold-keys", talks.renamed("cold"), fake.base_url)
    ideal, rotating = ideal_rate(talks), expected_round_robin(talks)
    print(
        f"\ncache hit rate, {talks.count} conversations x {talks.turns} turns, 1 deployment"
        f" of 2 keys: with affinity {warm.rate:.3f} ({warm.cached}/{warm.prompt} tokens),"
        f" without {cold.rate:.3f} ({cold.cached}/{cold.prompt}),"
        f" ideal {ideal:.3f}, keys in turn {rotating:.3f}"
    )
    assert warm.rate >= 0.95 * ideal, (warm, ideal)
    assert warm.rate > rotating + 0.15, (warm, cold)
    assert cold.rate < warm.rate, (warm, cold)
    tags = {"…" + k[-4:] for k in CHANNEL_KEYS}
    assert len(warm.keys) == talks.count
    assert all(len(used) == 1 for used in warm.keys.values()), warm.keys  # one key each
    assert set().union(*warm.keys.values()) == tags  # and both keys serve conversations
    assert all(len(used) == 2 for used in cold.keys.values()), cold.keys
