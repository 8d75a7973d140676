"""Prometheus metrics, one registry per gateway (no process-wide state).

Counters and histograms are updated once per request or once per upstream read (never
per chunk); gauges of streams and circuit states are read from the hub and the router
when ``/metrics`` is scraped. Labels carry model and deployment names only: never a
key, a prompt or a stream id.

Labels are bounded: a model label is a name the gateway serves by name (configured,
listed, or a provider's listed bare name); any other name a client sends (a provider
with ``"*"`` passes anything through) counts as ``other``, its deployment as
``<provider>/*``. So the number of series does not grow with what clients send, and a
scrape stays small; it is rendered off the event loop all the same.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from .metrics_shared import SharedState, State, state_families
from .router import Deployment
from .streams.hub import StreamHub

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_GAP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BREAKER = {"closed": 0, "half_open": 1, "open": 2}
OTHER = "other"  # the model label of every name not served by name
M = TypeVar("M", Counter, Histogram)


@dataclass(slots=True)
class Labels:
    """The names that may be label values; everything else goes to one bucket."""

    models: frozenset[str] = frozenset()
    deployments: frozenset[str] = frozenset()

    def model(self, name: str) -> str:
        return name if name in self.models else OTHER

    def deployment(self, name: str) -> str:
        if name in self.deployments or name == "-":
            return name
        return name.partition("/")[0] + "/*"


class _StateCollector(Collector):
    def __init__(
        self, hub: StreamHub, deployments: Callable[[], list[Deployment]], metrics: Metrics
    ) -> None:
        self._hub = hub
        self._deployments = deployments
        self._metrics = metrics

    def snapshot(self) -> State:
        """This process's streams, breakers and requests in flight, now."""
        live = self._hub.live()
        states: dict[str, int] = {}
        flying: dict[str, int] = {}
        for d in self._deployments():  # a bucket: its worst state, its sum in flight
            label = self._metrics.labels.deployment(d.name)
            states[label] = max(states.get(label, 0), _BREAKER[d.breaker.state])
            flying[label] = flying.get(label, 0) + d.in_flight
        detached = sum(1 for s in live if s.readers == 0)
        return State(len(live), detached, self._hub.detached, states, flying)

    def collect(self) -> Iterable[Metric]:
        state = self.snapshot()
        lost = CounterMetricFamily(
            "tokenrelay_streams_detached",
            "Times a stream being produced lost its last reader (a client dropped).",
        )
        lost.add_metric([], state.lost)
        return [*state_families([state]), lost]


class Metrics:
    def __init__(self, shared_dir: str | None = None) -> None:
        """``shared_dir``: the workers' prometheus_client multiprocess directory
        (``metrics_shared.py``); None for one process."""
        self.shared_dir = shared_dir
        self.shared: SharedState | None = None
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tokenrelay_requests",
            "Requests by model, deployment, client protocol and outcome.",
            ["model", "deployment", "protocol", "outcome"],
            registry=r,
        )
        self.ttft = Histogram(
            "tokenrelay_time_to_first_token_seconds",
            "From the request's arrival to the first byte of the answer.",
            ["model"],
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.gap = Histogram(
            "tokenrelay_inter_chunk_gap_seconds",
            "Time between two upstream reads of one stream.",
            ["model"],
            buckets=_GAP_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "tokenrelay_tokens",
            "Tokens by model and direction (in, out).",
            ["model", "direction"],
            registry=r,
        )
        self.stream_events = Counter(
            "tokenrelay_stream_events",
            "Stream life events: resumed, cancelled, resume_<status> for a refused resume.",
            ["event"],
            registry=r,
        )
        self.retries = Counter(
            "tokenrelay_retries",
            "Attempts that failed and were retried, by deployment.",
            ["deployment"],
            registry=r,
        )
        self.fallbacks = Counter(
            "tokenrelay_fallbacks",
            "Requests answered by a fallback model, by model asked.",
            ["model"],
            registry=r,
        )

        # (metric, label values) -> child: prometheus_client's labels() validates and
        # locks on every call; a request's bookkeeping asks for five of them.
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self.labels = Labels()

    def name(self, models: Iterable[str], deployments: Iterable[str]) -> None:
        """The model and deployment names that get a label of their own."""
        self.labels = Labels(frozenset(models), frozenset(deployments))

    def retried(self, deployment: str) -> None:
        """An attempt on ``deployment`` failed and was retried."""
        self.child(self.retries, self.labels.deployment(deployment)).inc()

    def child(self, metric: M, *values: str) -> M:
        """``metric.labels(*values)``, remembered."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def gaps(self, model: str) -> Gaps:
        """A stream's tally of its inter-read gaps, for ``gap`` (``Gaps``)."""
        return Gaps(self.child(self.gap, self.labels.model(model)))

    def watch(self, hub: StreamHub, deployments: Callable[[], list[Deployment]]) -> None:
        collector = _StateCollector(hub, deployments, self)
        if self.shared_dir is None:
            self.registry.register(collector)
        else:
            self.shared = SharedState(self.shared_dir, collector.snapshot)

    def render(self) -> bytes:
        if self.shared is not None:
            return self.shared.render()
        return generate_latest(self.registry)


class Gaps:
    """One stream's inter-read gaps, counted here and added to the histogram in bulk
    (every ``FLUSH`` gaps, and when the stream's reading ends): the histogram's own
    ``observe`` takes a lock and walks the buckets for every read, the one per-chunk
    metric. A scrape sees a stream's gaps at most ``FLUSH`` reads late."""

    FLUSH = 64
    __slots__ = ("_bounds", "_child", "_counts", "_n", "_sum")

    def __init__(self, child: Histogram) -> None:
        self._child = child
        self._bounds: list[float] = child._upper_bounds  # ends with +Inf
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._n = 0

    def observe(self, seconds: float) -> None:
        self._counts[bisect_left(self._bounds, seconds)] += 1  # the bucket "le" it falls in
        self._sum += seconds
        self._n += 1
        if self._n >= self.FLUSH:
            self.flush()

    def flush(self) -> None:
        if not self._n:
            return
        buckets = self._child._buckets
        for i, count in enumerate(self._counts):
            if count:
                buckets[i].inc(count)
                self._counts[i] = 0
        self._child._sum.inc(self._sum)
        self._sum = 0.0
        self._n = 0
