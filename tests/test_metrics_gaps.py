"""The per-stream gap tally (``metrics.Gaps``) adds to the gap histogram exactly what
observing each gap would have: same buckets, count and sum, in bulk."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from tokenrelay.metrics import _GAP_BUCKETS, Gaps

gaps = st.lists(
    st.one_of(
        st.sampled_from(_GAP_BUCKETS),  # on a bucket's bound: "le" includes it
        st.floats(min_value=0, max_value=120, allow_nan=False),
    ),
    max_size=300,
)


def _histogram() -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    return registry, Histogram("g", "gaps", ["model"], buckets=_GAP_BUCKETS, registry=registry)


@settings(deadline=None, max_examples=100)
@given(st.lists(gaps, max_size=4))
def test_gaps_in_bulk_equal_each_observed(streams: list[list[float]]) -> None:
    r1, each = _histogram()
    r2, bulk = _histogram()
    each.labels("m"), bulk.labels("m")
    for values in streams:
        tally = Gaps(bulk.labels("m"))
        for v in values:
            each.labels("m").observe(v)
            tally.observe(v)
        tally.flush()
    for bound in [*_GAP_BUCKETS, "+Inf"]:
        le = {"model": "m", "le": str(float(bound)) if bound != "+Inf" else bound}
        assert r2.get_sample_value("g_bucket", le) == r1.get_sample_value("g_bucket", le)
    m = {"model": "m"}
    assert r2.get_sample_value("g_count", m) == r1.get_sample_value("g_count", m)
    assert r2.get_sample_value("g_sum", m) == pytest.approx(r1.get_sample_value("g_sum", m))


def test_a_scrape_sees_a_long_stream_before_it_ends() -> None:
    registry, hist = _histogram()
    tally = Gaps(hist.labels("m"))
    for _ in range(Gaps.FLUSH):
        tally.observe(0.05)
    assert registry.get_sample_value("g_count", {"model": "m"}) == Gaps.FLUSH
    tally.observe(0.05)
    assert registry.get_sample_value("g_count", {"model": "m"}) == Gaps.FLUSH
    tally.flush()
    assert registry.get_sample_value("g_count", {"model": "m"}) == Gaps.FLUSH + 1
