"""``/metrics`` over every worker of ``tokenrelay serve --workers N``.

Counters and histograms: prometheus_client's multiprocess mode. Each worker's values
live in memory-mapped files of the run's directory (``PROMETHEUS_MULTIPROC_DIR``, set
by the master before prometheus_client is imported); a scrape on any worker sums every
file, those of workers that died included (a counter never goes back).

The state gauges (streams active and detached, circuit state and requests in flight per
deployment) are read from the hub and the router, which only their own process sees:
each worker writes its ``State`` to ``state/<pid>.json`` once a second (and the one
scraped, at the scrape), and a scrape sums the files of the workers alive (a breaker:
its worst state); the master removes a dead worker's file. So those gauges may be up to
a second old; the labels are the same bounded ones as with one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import msgspec
from prometheus_client import CollectorRegistry, Counter, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PUBLISH_EVERY = 1.0  # seconds between two State files of a worker


@dataclass(slots=True)
class State:
    """What the state gauges show of one process."""

    active: int
    detached: int
    lost: int  # times a stream lost its last reader, since the start
    circuits: dict[str, int]
    in_flight: dict[str, int]


def state_families(states: Iterable[State]) -> list[Metric]:
    """The gauges of ``states`` summed (a breaker: its worst state of all)."""
    active = GaugeMetricFamily("tokenrelay_streams_active", "Streams being produced.")
    detached = GaugeMetricFamily(
        "tokenrelay_streams_detached", "Streams being produced with no reader attached."
    )
    circuit = GaugeMetricFamily(
        "tokenrelay_circuit_state",
        "Circuit breaker per deployment: 0 closed, 1 half open, 2 open.",
        labels=["deployment"],
    )
    in_flight = GaugeMetricFamily(
        "tokenrelay_deployment_in_flight",
        "Requests in flight per deployment.",
        labels=["deployment"],
    )
    total = State(0, 0, 0, {}, {})
    for s in states:
        total.active += s.active
        total.detached += s.detached
        for label, value in s.circuits.items():
            total.circuits[label] = max(total.circuits.get(label, 0), value)
        for label, value in s.in_flight.items():
            total.in_flight[label] = total.in_flight.get(label, 0) + value
    active.add_metric([], total.active)
    detached.add_metric([], total.detached)
    for label, value in total.circuits.items():
        circuit.add_metric([label], value)
        in_flight.add_metric([label], total.in_flight.get(label, 0))
    return [active, detached, circuit, in_flight]


def _state_dir(directory: str) -> Path:
    return Path(directory) / "state"


def forget(directory: str, pid: int) -> None:
    """A worker died: its gauges no longer count (its counters still do)."""
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    with contextlib.suppress(FileNotFoundError):
        (_state_dir(directory) / f"{pid}.json").unlink()


class _Workers(Collector):
    def __init__(self, states: Path) -> None:
        self._states = states

    def collect(self) -> Iterable[Metric]:
        found: list[State] = []
        for path in self._states.glob("*.json"):
            with contextlib.suppress(OSError, msgspec.DecodeError):  # a worker just gone
                found.append(msgspec.json.decode(path.read_bytes(), type=State))
        return state_families(found)


class SharedState:
    """One worker's part of the shared ``/metrics``."""

    def __init__(self, directory: str, snapshot: Callable[[], State]) -> None:
        self.directory = directory
        self._states = _state_dir(directory)
        self._states.mkdir(exist_ok=True)
        self._snapshot = snapshot
        self._lost = Counter(
            "tokenrelay_streams_detached",
            "Times a stream being produced lost its last reader (a client dropped).",
            registry=None,  # its values go to this worker's file; rendered from them all
        )
        self._lost_seen = 0

    def publish(self) -> None:
        state = self._snapshot()
        if state.lost > self._lost_seen:
            self._lost.inc(state.lost - self._lost_seen)
            self._lost_seen = state.lost
        path = self._states / f"{os.getpid()}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(msgspec.json.encode(state))
        temporary.replace(path)  # a scrape reads a whole file or the one before

    async def every(self, seconds: float = PUBLISH_EVERY) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.publish()

    def render(self) -> bytes:
        self.publish()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, self.directory)  # type: ignore[no-untyped-call]
        registry.register(_Workers(self._states))
        return generate_latest(registry)
