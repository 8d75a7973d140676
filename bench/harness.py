"""Process plumbing shared by run.py, soak.py and choices.py: free ports, starting and killing
servers, readiness checks, CPU and RSS of a process tree read from /proc, and running the
load generator as a subprocess with a READY/GO/END/BYE handshake."""

from __future__ import annotations

import contextlib
import http.client
import importlib.metadata as md
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tokenrelay.protocols.base import bearer as bearer_headers

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENV_BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
LOOPBACK = "127.0.0.1"


API_KEY = "sk-bench"
"""The key every benchmark client sends (and the fake upstream's in the gateway config)."""


def write_gateway_config(run_dir: Path, fake_port: int, extra: str = "") -> Path:
    """The gateway's YAML config for the benchmarks: the fake upstream as provider
    ``fake`` (OpenAI chat) and ``fakeresp`` (its Responses wire), any model name passed
    through, plus ``extra`` YAML lines."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = run_dir / "tokenrelay.yaml"
    cfg.write_text(
        "providers:\n"
        "  - name: fake\n"
        "    protocol: openai\n"
        f"    base_url: http://127.0.0.1:{fake_port}/v1\n"
        f"    api_key: {API_KEY}\n"
        '    models: ["*"]\n'
        "  - name: fakeresp\n"
        "    protocol: openai-responses\n"
        f"    base_url: http://127.0.0.1:{fake_port}/v1\n"
        f"    api_key: {API_KEY}\n"
        '    models: ["*"]\n' + extra
    )
    return cfg


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def raise_nofile() -> None:
    """Let this process and its children hold thousands of sockets."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# -- CPU placement -----------------------------------------------------------------


def cpu_plan(pin: bool) -> tuple[list[str], list[str]]:
    """Command prefixes (driver side, target side). With two or more CPUs and ``pin``,
    the fake upstream and the load generator share CPU 0 and the measured target gets
    CPU 1 to itself, so the target's figures are not disturbed by the harness."""
    taskset = shutil.which("taskset")
    if not pin or taskset is None or (os.cpu_count() or 1) < 2:
        return [], []
    return [taskset, "-c", "0"], [taskset, "-c", "1"]


# -- /proc -----------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("latin-1")
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ")".
    return raw[raw.rindex(")") + 2 :].split()


def descendants(root: int) -> list[int]:
    """root and every live process below it: its children's children by parent pid,
    and, when root leads a session (servers are started with their own), every process
    of that session, so a helper that double-forked away from root still counts."""
    children: dict[int, list[int]] = {}
    session: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _stat(int(name))
        if st is None:
            continue
        children.setdefault(int(st[1]), []).append(int(name))
        if int(st[3]) == root:  # field "session"
            session.append(int(name))
    out, todo, seen = [], [root, *session], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu_seconds(root: int) -> float:
    """utime+stime of root and its live descendants, plus the CPU of children that
    root has already reaped (cutime+cstime of root)."""
    total = 0
    for pid in descendants(root):
        st = _stat(pid)
        if st is None:
            continue
        # fields after the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
        total += int(st[11]) + int(st[12])
        if pid == root:
            total += int(st[13]) + int(st[14])
    return total / CLK_TCK


def tree_rss_mb(root: int) -> float:
    """Sum of the resident set of root and its descendants (shared pages of a forked
    worker count once per process, as ``ps`` shows them)."""
    total = 0
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total / (1024 * 1024)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("?" when unknown)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def version(dist: str) -> str:
    """An installed distribution's version, or "not installed"."""
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def repo_commit() -> str:
    """The checked-out commit of the repository, marked when the work tree differs."""
    git = ["git", "-C", str(REPO)]
    try:
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return commit + (" (with uncommitted changes)" if dirty else "")


def machine_cpu() -> tuple[float, float]:
    """(user+nice+system, steal) seconds of the whole machine since boot, /proc/stat."""
    with open("/proc/stat", "rb") as f:
        fields = f.readline().split()
    user, nice, system = int(fields[1]), int(fields[2]), int(fields[3])
    steal = int(fields[8]) if len(fields) > 8 else 0
    return (user + nice + system) / CLK_TCK, steal / CLK_TCK


class Noise:
    """CPU time the rest of the machine used while a block ran: the machine's busy time
    minus what this process and everything it started used (``foreign_s``), and the
    time the hypervisor stole from this VM (``steal_s``)."""

    def __init__(self) -> None:
        self.foreign_s = 0.0
        self.steal_s = 0.0
        self.wall_s = 0.0

    def __enter__(self) -> Noise:
        self._busy, self._steal = machine_cpu()
        self._own = tree_cpu_seconds(os.getpid())
        self._t = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        busy, steal = machine_cpu()
        own = tree_cpu_seconds(os.getpid())
        self.foreign_s = max(0.0, (busy - self._busy) - (own - self._own))
        self.steal_s = steal - self._steal
        self.wall_s = time.monotonic() - self._t


class RssSampler:
    """Samples the tree's RSS every ``interval`` seconds in a thread; ``peak_mb``."""

    def __init__(self, root: int, interval: float = 0.1) -> None:
        self.root = root
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, tree_rss_mb(self.root))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak_mb = tree_rss_mb(self.root)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak_mb = max(self.peak_mb, tree_rss_mb(self.root))


# -- servers -------------------------------------------------------------------------


@dataclass
class Server:
    """A server process started in its own session, so the whole group can be killed."""

    name: str
    argv: list[str]
    port: int
    env: dict[str, str] | None = None
    cwd: Path | None = None
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path = self.log_path or (BENCH / "out" / f"{self.name}.log")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        _ALIVE[id(self)] = self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")

    def stop(self, grace: float = 5.0) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace)
        if proc is not None:
            # Leftovers of the group (a worker that ignored SIGTERM) go too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        _ALIVE.pop(id(self), None)


_ALIVE: dict[int, Server] = {}


def stop_all() -> None:
    for server in list(_ALIVE.values()):
        try:
            server.stop(grace=3.0)
        except Exception as e:  # keep killing the others
            print(f"bench: stopping {server.name}: {e}", file=sys.stderr)


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP behave like Ctrl-C, so the finally blocks run and servers die."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)
    # A shell without job control starts background jobs with SIGINT ignored; undo that.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def probe_stream(port: int, model: str, path: str = "/v1/chat/completions") -> str | None:
    """One small streaming request; None when it answered 200 and ended with [DONE]."""
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    try:
        conn.request(
            "POST",
            path,
            body=body,
            headers={"Content-Type": "application/json", **bearer_headers(API_KEY)},
        )
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            return f"HTTP {resp.status}: {data[:300]!r}"
        if b"[DONE]" not in data:
            return f"no [DONE] in {data[:300]!r}"
        return None
    except (OSError, http.client.HTTPException) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        conn.close()


def wait_ready(
    server: Server, check: Callable[[], str | None], timeout: float, answering_grace: float = 20.0
) -> None:
    """Poll ``check`` (None = ready) until it passes; raise with the end of the server's
    log if it dies, if the timeout passes, or if it has been answering without passing
    for ``answering_grace`` seconds (a server that is up but broken)."""
    start = time.monotonic()
    deadline = start + timeout
    answering_since: float | None = None
    last = "not started"
    while time.monotonic() < deadline:
        if not server.alive():
            code = server.proc.returncode if server.proc else "?"
            raise RuntimeError(f"{server.name} exited with {code}; log ends: {server.log_tail()}")
        last = check() or ""
        if not last:
            return
        if "ConnectionRefused" in last:
            answering_since = None
        elif answering_since is None:
            answering_since = time.monotonic()
        elif time.monotonic() - answering_since > answering_grace:
            break
        time.sleep(0.25)
    raise RuntimeError(
        f"{server.name} not ready after {time.monotonic() - start:.0f}s (last probe: {last}); "
        f"log ends: {server.log_tail()}"
    )


# -- the fake upstream ----------------------------------------------------------------


def fake_server(port: int, prefix: list[str]) -> Server:
    """``tokenrelay fake-upstream`` (importable as tokenrelay.fake.cli) on ``port``."""
    code = "import sys; from tokenrelay.fake.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = [*prefix, sys.executable, "-c", code, "--port", str(port), "--log-limit", "0"]
    return Server("fake-upstream", argv, port, cwd=REPO)


# -- the load generator as a subprocess ---------------------------------------------


@dataclass
class Measured:
    result: dict[str, Any]
    target_cpu_s: float | None = None
    target_peak_rss_mb: float | None = None


def run_loadgen(
    *,
    port: int,
    model: str,
    concurrency: int,
    requests: int,
    timeout: float,
    deadline: float,
    target_pid: int | None = None,
    prefix: Sequence[str] = (),
    api_key: str | None = None,
    raw: bool = False,
    path: str = "/v1/chat/completions",
    no_store: bool = False,
    body_bytes: int = 0,
) -> Measured:
    """Run bench/loadgen.py in its own process. When ``target_pid`` is given, that
    process tree's CPU time is read right before GO and right after END, and its RSS is
    sampled in between."""
    argv = [
        *prefix,
        sys.executable,
        str(BENCH / "loadgen.py"),
        "--port",
        str(port),
        "--model",
        model,
        "-c",
        str(concurrency),
        "-n",
        str(requests),
        "--timeout",
        str(timeout),
        "--deadline",
        str(deadline),
        "--handshake",
        "--path",
        path,
    ]
    if api_key:
        argv += ["--api-key", api_key]
    if raw:
        argv.append("--raw")
    if no_store:
        argv.append("--no-store")
    if body_bytes:
        argv += ["--body-bytes", str(body_bytes)]
    err_path = BENCH / "out" / "loadgen.stderr"
    err_path.parent.mkdir(parents=True, exist_ok=True)
    stderr = open(err_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None and proc.stdin is not None
    stdout, stdin = proc.stdout, proc.stdin

    def reader() -> None:
        for raw_line in stdout:
            lines.put(raw_line.decode("utf-8", "replace").rstrip("\n"))
        lines.put("\x00EOF")

    threading.Thread(target=reader, daemon=True).start()
    hard_deadline = time.monotonic() + deadline + 60

    def expect(word: str) -> str:
        while True:
            left = hard_deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"loadgen: no {word} in time")
            try:
                line = lines.get(timeout=left)
            except queue.Empty as e:
                raise TimeoutError(f"loadgen: no {word} in time") from e
            if line == "\x00EOF":
                stderr.flush()
                err = err_path.read_bytes()[-3000:].decode("utf-8", "replace")
                raise RuntimeError(f"loadgen exited before {word}: {err}")
            if line.startswith(word):
                return line

    def say(word: str) -> None:
        stdin.write(word.encode() + b"\n")
        stdin.flush()

    try:
        expect("READY")
        cpu0 = tree_cpu_seconds(target_pid) if target_pid else 0.0
        sampler = RssSampler(target_pid) if target_pid else None
        if sampler:
            sampler.__enter__()
        try:
            say("GO")
            expect("END")
            cpu1 = tree_cpu_seconds(target_pid) if target_pid else 0.0
        finally:
            if sampler:
                sampler.__exit__()
        say("BYE")
        line = expect("RESULT ")
        proc.wait(timeout=30)
        result = json.loads(line[len("RESULT ") :])
        return Measured(
            result=result,
            target_cpu_s=(cpu1 - cpu0) if target_pid else None,
            target_peak_rss_mb=sampler.peak_mb if sampler else None,
        )
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for stream in (stdin, stdout, stderr):
            with contextlib.suppress(OSError):
                stream.close()
