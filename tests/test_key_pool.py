"""The key pool's rules on a clock the test holds: round robin over usable keys, a rest
that ends when the Retry-After says, a 401'd key out, the last usable key kept; a
conversation's requests on the key it ranks first, moved while that key rests or is
disabled."""

from __future__ import annotations

from tokenrelay.affinity import Conversation
from tokenrelay.events import ChatRequest, Message, TextPart
from tokenrelay.providers.keys import KeyPool, UpstreamKey, key_id, mask, parse_retry_after


def test_round_robin_rests_and_disables() -> None:
    now = [100.0]
    out: list[str] = []
    pool = KeyPool(
        [UpstreamKey("a", "sa"), UpstreamKey("b", "sb"), UpstreamKey("c", "sc")],
        clock=lambda: now[0],
        on_disabled=lambda k, status: out.append(f"{k.id} {status}"),
    )
    assert [pool.pick().id for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]  # type: ignore[union-attr]
    a, b, c = pool.keys
    pool.rest(b, 30.0)
    assert {pool.pick().id for _ in range(4)} == {"a", "c"}  # type: ignore[union-attr]
    now[0] += 31.0
    assert "b" in {pool.pick().id for _ in range(3)}  # type: ignore[union-attr]
    pool.disable(c, 401)
    assert out == ["c 401"] and c.state(now[0]) == "disabled"
    assert {pool.pick().id for _ in range(4)} == {"a", "b"}  # type: ignore[union-attr]
    pool.rest(a, 5.0)
    pool.disable(b, 403)  # the last usable key: kept in use, not disabled
    assert b.disabled is None and out == ["c 401"]
    assert pool.pick(exclude={"b"}) is a  # all others resting: the one back first
    assert pool.pick(exclude={"a", "b"}) is None


def test_ids_and_masks_hide_the_secret() -> None:
    secret = "sk-upstream-secret-1234"
    assert secret not in key_id("p", secret) and key_id("p", secret) == key_id("p", secret)
    assert key_id("p", secret) != key_id("q", secret)
    assert mask(secret) == "…1234" and mask("short") == "…"
    assert parse_retry_after("2.5") == 2.5 and parse_retry_after("Wed, 21 Oct 2015") is None


def _talk(i: int) -> Conversation:
    request = ChatRequest("m", [Message("user", [TextPart(f"conversation {i}")])])
    return Conversation(request)


def test_a_conversation_keeps_its_key_while_it_is_healthy() -> None:
    now = [100.0]
    keys = [UpstreamKey(name, "s" + name) for name in "abcd"]
    pool = KeyPool(keys, clock=lambda: now[0])
    talks = [_talk(i) for i in range(40)]
    first = [pool.pick(conversation=t) for t in talks]
    assert all(k is not None for k in first)
    again = [pool.pick(conversation=t) for t in talks]
    assert again == first  # the same key, turn after turn, whatever came between
    assert len({k.id for k in first if k is not None}) == 4  # spread over every key
    talk, home = talks[0], first[0]
    assert home is not None
    pool.rest(home, 30.0)
    moved = pool.pick(conversation=talk)
    assert moved is not None and moved is not home
    assert pool.pick(conversation=talk) is moved  # it stays on the next-ranked key
    others = [pool.pick(conversation=t) for t in talks]
    # only the resting key's conversations moved
    assert [o for o, f in zip(others, first, strict=True) if f is not home] == [
        f for f in first if f is not home
    ]
    now[0] += 31.0
    assert pool.pick(conversation=talk) is home  # back once the rest is over
    pool.disable(home, 401)
    assert pool.pick(conversation=talk) is moved
    assert pool.pick(exclude={moved.id}, conversation=talk) not in (home, moved)
    assert pool.pick(conversation=None) is not None  # no conversation: round robin
