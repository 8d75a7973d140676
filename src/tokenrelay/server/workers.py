"""``tokenrelay serve --workers N``: N gateway processes on one port.

The master binds the listening socket (so a port already in use is an error at once,
as with one process) and forks the workers, which inherit it and accept from it; the
master itself serves nothing. Why one inherited socket and not ``SO_REUSEPORT`` per
worker: a second gateway started by mistake on the same port would silently join a
reuse-port group and take half the connections; connections queued on a worker that
dies are lost with its reuse-port socket, never with the shared one; and an idle
worker takes the next connection first (measured in the README, "Every core").

Workers share what a client must see as one gateway through Redis and the database,
exactly as replicas on several machines do; so more than one worker needs
``redis_url`` (``refusal``), and the default is one per usable core with Redis, 1
without (``default_workers``). ``/metrics`` sums the workers: prometheus_client's
multiprocess mode, in a directory made for this run and removed at its end.

Start: worker 1 first, alone (it migrates the database), then the others. A worker
that dies is forked again with the same number (a worker that keeps dying at start
stops the gateway). SIGTERM or SIGINT: the master closes its copy of the socket and
sends SIGTERM to every worker, which drains as one process does (``run.py``); the
master exits when all have, killing any still there ``shutdown_drain`` + 15 s later.
A worker dies with its master (``PR_SET_PDEATHSIG``), so a killed gateway leaves none.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config
from .worker import Worker

log = logging.getLogger("tokenrelay.workers")

METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Where prometheus_client's multiprocess mode keeps the values (read at its import)."""
QUICK_DEATH = 5.0  # seconds: a worker dead sooner than this after its start died at start
MAX_QUICK_DEATHS = 5  # in a row, before the gateway gives up
PR_SET_PDEATHSIG = 1


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota
    (a container's ``--cpus``, a Kubernetes CPU limit), rounded up."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def default_workers(config: Config) -> int:
    """One per usable core where workers share their state (Redis), else one."""
    return usable_cores() if config.redis_url else 1


def refusal(config: Config, workers: int) -> str | None:
    """Why ``workers`` processes cannot serve ``config`` as one gateway, or None."""
    if workers < 1:
        return "--workers must be at least 1"
    if workers > 1 and not config.redis_url:
        return (
            f"--workers {workers} needs redis_url (or --redis-url): workers share limits, "
            "streams (resume, cancel) and channel changes through Redis, as replicas do; "
            "without it each would be a gateway of its own. Run one worker, or set Redis."
        )
    return None


def listen(host: str, port: int) -> socket.socket:
    """The listening socket every worker inherits (uvicorn's own options and backlog)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class _Child:
    index: int
    pid: int
    started: float
    ready: int | None  # the read end of the pipe it writes one byte to once it serves


@dataclass
class Supervisor:
    """The master: forks ``count`` workers running ``run(worker, sock, ready_fd)``
    (which returns the exit status), restarts those that die, drains them on SIGTERM."""

    count: int
    sock: socket.socket
    run: Callable[[Worker, socket.socket, int], int]
    drain: float
    metrics_dir: str
    children: dict[int, _Child] = field(default_factory=dict)  # by pid
    stopping: bool = False
    quick_deaths: int = 0

    def main(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        signal.set_wakeup_fd(wake_w)
        signals: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _: signals.append(signum))
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select below
        self._wake = (wake_r, wake_w)
        try:
            status = self._start()
            if status == 0:
                status = self._loop(wake_r, signals)
            return status
        finally:
            self._stop_all()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _start(self) -> int:
        """Worker 1 alone, then the rest; 0 once all serve, else the failed one's status."""
        first = self._fork(1)
        if not self._wait_ready([first]):
            return self._failed_start()
        rest = [self._fork(i) for i in range(2, self.count + 1)]
        if not self._wait_ready(rest):
            return self._failed_start()
        pids = ", ".join(str(c.pid) for c in self.children.values())
        log.info("%d workers serving (pids %s)", self.count, pids)
        return 0

    def _failed_start(self) -> int:
        log.error("a worker failed to start; stopping")
        return 3

    def _wait_ready(self, children: list[_Child]) -> bool:
        waiting = {c.ready: c for c in children if c.ready is not None}
        while waiting:
            readable, _, _ = select.select(list(waiting), [], [], 1.0)
            for fd in readable:
                child = waiting.pop(fd)
                if not os.read(fd, 1):  # closed without a byte: it died at start
                    return False
            for child in list(waiting.values()):
                if os.waitpid(child.pid, os.WNOHANG)[0] == child.pid:
                    self.children.pop(child.pid, None)
                    return False
        return True

    def _fork(self, index: int) -> _Child:
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                os.close(ready_r)
                for fd in self._wake:
                    os.close(fd)
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                _die_with_parent()
                status = self.run(Worker(index, self.metrics_dir), self.sock, ready_w)
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        os.close(ready_w)
        child = _Child(index, pid, time.monotonic(), ready_r)
        self.children[pid] = child
        return child

    def _loop(self, wake: int, signals: list[int]) -> int:
        while self.children:
            select.select([wake], [], [], 1.0)
            try:
                while os.read(wake, 512):
                    pass
            except BlockingIOError:
                pass
            if signals and not self.stopping:
                self._begin_stop()
            self._reap()
            if self.stopping and time.monotonic() > self._kill_at:
                self._kill_rest()
            if self.quick_deaths >= MAX_QUICK_DEATHS:
                log.error("workers keep dying at start; stopping")
                return 3
        return 0

    def _begin_stop(self) -> None:
        self.stopping = True
        self._kill_at = time.monotonic() + self.drain + 15
        self.sock.close()  # once every worker closed its copy, new connections are refused
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            if child.ready is not None:
                os.close(child.ready)
            self._forget_live_gauges(pid)
            if self.stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            quick = time.monotonic() - child.started < QUICK_DEATH
            self.quick_deaths = self.quick_deaths + 1 if quick else 0
            log.warning("worker %d (pid %d) exited (%d); starting it again", child.index, pid, code)
            replacement = self._fork(child.index)
            assert replacement.ready is not None
            os.close(replacement.ready)  # it serves when it is ready; nobody waits for it
            replacement.ready = None

    def _forget_live_gauges(self, pid: int) -> None:
        from ..metrics_shared import forget

        forget(self.metrics_dir, pid)

    def _kill_rest(self) -> None:
        for child in self.children.values():
            log.warning("worker %d (pid %d) still draining: killed", child.index, child.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
        self._kill_at = math.inf

    def _stop_all(self) -> None:
        """On the way out for any reason: no worker outlives the master."""
        if not self.children:
            return
        if not self.stopping:
            self._begin_stop()
        deadline = self._kill_at
        while self.children and time.monotonic() < deadline:
            time.sleep(0.1)
            self._reap()
        self._kill_rest()
        while self.children:
            self._reap()
            time.sleep(0.05)


def serve_workers(config: Config, host: str, port: int, count: int, log_level: str) -> int:
    """Run ``count`` workers on ``host:port`` until SIGTERM; the exit status."""
    try:
        sock = listen(host, port)
    except OSError as exc:
        print(f"tokenrelay: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    metrics_dir = tempfile.mkdtemp(prefix="tokenrelay-metrics-")
    os.environ[METRICS_ENV] = metrics_dir  # before prometheus_client is imported: see app
    if "prometheus_client" in sys.modules:  # imported already (in-process callers)
        from prometheus_client import values

        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]

    def run(worker: Worker, sock: socket.socket, ready: int) -> int:
        from .app import create_app
        from .run import serve

        app = create_app(config, host, worker)
        names = ", ".join(sorted(app.state.gateway.router.providers)) or "none"
        log.info("worker %d (pid %d) starting (providers: %s)", worker.index, os.getpid(), names)
        serve(app, host, port, log_level, config.shutdown_drain, [sock], ready)
        return 0

    print(f"tokenrelay: serving on http://{host}:{port} with {count} workers", file=sys.stderr)
    return Supervisor(count, sock, run, config.shutdown_drain, metrics_dir).main()
