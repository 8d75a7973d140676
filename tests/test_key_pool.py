"""The key pool's rules on a clock the test holds: round robin over usable keys, a rest
that ends when the Retry-After says, a 401'd key out, the last usable key kept."""

from __future__ import annotations

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
