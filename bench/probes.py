"""Probes of a running gateway that the benchmarks share (bench/run.py, bench/soak.py):
its processes' RSS and CPU over time, the time they waited for a CPU, its metrics and
access log, this client's own event-loop lag, and the machine lines of a report.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import http.client
import os
import platform
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from harness import LOOPBACK, PAGE, cpu_model, descendants, repo_commit, version


def machine_lines(script: str, when: dt.datetime, note: str, versions: str) -> list[str]:
    """The report's first lines: date (and ``note``), command, machine, and Python,
    tokenrelay, uvicorn and uvloop, then ``versions``."""
    commit = repo_commit()
    return [
        f"- date: {when.strftime('%Y-%m-%d %H:%M UTC')}{note}",
        f"- command: `{' '.join([Path(sys.executable).name, script, *sys.argv[1:]])}`",
        f"- machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}, Linux {platform.release()}",
        f"- python {platform.python_version()}; tokenrelay {version('tokenrelay')} at {commit}; "
        f"uvicorn {version('uvicorn')}, uvloop {version('uvloop')}, {versions}",
    ]


def load_line(load_before: float) -> str:
    """The 1-minute load average before the run, flagged when the machine was busy."""
    return f"- 1-min load average before the run: {load_before:.2f}" + (
        " (**the machine was busy: figures are noisy**)" if load_before > 0.5 else ""
    )


class Sampler:
    """RSS and CPU time of the gateway's processes every ``interval`` s, as an asyncio
    task (small /proc reads per sample)."""

    def __init__(self, pids: list[int], interval: float = 0.1) -> None:
        self.pids = pids
        self.interval = interval
        self.t0 = time.monotonic()
        self.timeline: list[tuple[float, float]] = []
        self.cpu: list[tuple[float, float]] = []  # (monotonic, CPU seconds)
        self._task: asyncio.Task[None] | None = None

    def cpu_s(self) -> float:
        total = 0
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    raw = f.read()
                st = raw[raw.rindex(b")") + 2 :].split()
                total += int(st[11]) + int(st[12])
            except (OSError, IndexError, ValueError):
                continue
        return total / os.sysconf("SC_CLK_TCK")

    def busy(self, t0: float, t1: float) -> dict[str, float]:
        """Between monotonic t0 and t1: the highest CPU use over any 1 s (1.0 = one whole
        core), and the seconds during which the trailing 0.5 s used 95 % of a core or more
        (/proc ticks are 10 ms, so shorter windows are too coarse)."""
        pts = [(t, c) for (t, c) in self.cpu if t0 <= t <= t1]

        def rate(i: int, window: float) -> float | None:
            j = i
            while j > 0 and pts[i][0] - pts[j][0] < window:
                j -= 1
            dt_ = pts[i][0] - pts[j][0]
            return (pts[i][1] - pts[j][1]) / dt_ if dt_ >= window * 0.9 else None

        peak = 0.0
        full = 0.0
        for i in range(1, len(pts)):
            r1 = rate(i, 1.0)
            if r1 is not None:
                peak = max(peak, r1)
            r = rate(i, 0.5)
            if r is not None and r >= 0.95:
                full += pts[i][0] - pts[i - 1][0]
        return {"peak_1s": peak, "s_at_95": full}

    def rss_mb(self) -> float:
        total = 0
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/statm", "rb") as f:
                    total += int(f.read().split()[1]) * PAGE
            except (OSError, IndexError, ValueError):
                continue
        return total / (1024 * 1024)

    def sample(self) -> float:
        mb = self.rss_mb()
        now = time.monotonic()
        self.timeline.append((round(now - self.t0, 2), round(mb, 2)))
        self.cpu.append((now, self.cpu_s()))
        return mb

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def peak_since(self, t: float) -> float:
        vals = [mb for (s, mb) in self.timeline if s >= t - self.t0]
        return max(vals) if vals else float("nan")


def sched_wait_s(root: int) -> float:
    """Seconds the threads of ``root``'s process tree spent runnable but waiting for a
    CPU (/proc/<pid>/task/<tid>/schedstat, second field; live threads only)."""
    total = 0
    for pid in descendants(root):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with (
                    contextlib.suppress(OSError, IndexError, ValueError),
                    open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f,
                ):
                    total += int(f.read().split()[1])
    return total / 1e9


def log_lines(path: Path, ids: list[str]) -> dict[str, str]:
    """The access-log line of each request id (written when its stream ended)."""
    want = set(ids)
    found: dict[str, str] = {}
    with contextlib.suppress(OSError), open(path, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", "replace").rstrip()
            for rid in want:
                if rid in line:
                    found[rid] = line[:400]
    return found


def scrape_metrics(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("tokenrelay_stream_events_total"):
            ev = re.search(r'event="(\w+)"', line)
            out[f"stream_events_{ev.group(1) if ev else '?'}"] = float(line.split()[-1])
        elif line.startswith("tokenrelay_streams_detached_total"):
            out["streams_detached_total"] = float(line.split()[-1])
        elif line.startswith(("tokenrelay_streams_active ", "tokenrelay_streams_detached ")):
            out[line.split()[0]] = float(line.split()[-1])
        elif line.startswith("tokenrelay_requests_total"):
            oc = re.search(r'outcome="(\w+)"', line)
            key = f"requests_{oc.group(1) if oc else '?'}"
            out[key] = out.get(key, 0.0) + float(line.split()[-1])
    return out


def log_summary(path: Path, offset: int) -> dict[str, Any]:
    """Outcomes of the access lines, and warning/error lines, after ``offset``."""
    with open(path, "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    outcomes: Counter[str] = Counter()
    resumes = 0
    problems: list[str] = []
    for line in text.splitlines():
        m = re.search(r" outcome=(\S+)", line)
        if m and "tokenrelay.access" in line:
            outcomes[m.group(1)] += 1
            r = re.search(r" resumes=(\d+)", line)
            resumes += int(r.group(1)) if r else 0
        elif re.search(r"WARNING|ERROR|CRITICAL|Traceback|Exception", line):
            problems.append(line[:300])
    return {"outcomes": dict(outcomes), "resumes_logged": resumes, "problems": problems[:20]}


async def loop_lag(out: list[float], period: float = 0.01) -> None:
    """How late this client's event loop wakes a 10 ms sleep (ms): when it is late, the
    client's own timestamps are late too, whatever the gateway does."""
    clock = time.perf_counter
    while True:
        t = clock()
        await asyncio.sleep(period)
        out.append((clock() - t - period) * 1000)
