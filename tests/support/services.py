"""Real PostgreSQL and Redis servers for tests, from the Debian packages ``postgresql``
and ``redis-server``: each started on a free loopback port in its own temporary
directory, stopped when the test process exits.

Missing binaries skip the tests that need them, with the reason; under ``CI=true`` they
fail instead, so a CI run can never pass by skipping. As root, PostgreSQL runs as the
``postgres`` user (``initdb`` refuses root).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .net import free_port, wait_listening

INSTALL_HINT = "install the Debian packages: apt-get install postgresql redis-server"


def unavailable(reason: str) -> None:
    """Skip (or, under CI=true, fail) with ``reason``."""
    message = f"{reason} ({INSTALL_HINT})"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def postgres_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has the server."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")]
    if not found:
        return None

    def version(bindir: Path) -> tuple[int, ...]:
        name = bindir.parent.name
        return tuple(int(x) for x in name.split(".") if x.isdigit())

    return max(found, key=version)


def _as_postgres_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        unavailable("running as root needs runuser to start PostgreSQL as 'postgres'")
    return [str(runuser), "-u", "postgres", "--"]


def _run(*args: str | Path) -> None:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )


@dataclass
class Postgres:
    """One PostgreSQL server (cluster) with ``trust`` auth on 127.0.0.1."""

    bindir: Path
    root: Path
    port: int
    prefix: list[str] = field(default_factory=list)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        pg_ctl = self.bindir / "pg_ctl"
        log = self.root / "server.log"
        _run(*self.prefix, pg_ctl, "-D", self.datadir, "-o", options, "-l", log, "-w", "start")
        wait_listening(self.port, 30)

    def stop(self, mode: str = "fast") -> None:
        _run(*self.prefix, self.bindir / "pg_ctl", "-D", self.datadir, "-m", mode, "-w", "stop")

    def running(self) -> bool:
        pid = self.datadir / "postmaster.pid"
        return pid.exists()

    def new_database(self) -> str:
        """A fresh empty database; returns its URL."""
        name = "t_" + secrets.token_hex(6)
        _run(
            self.bindir / "createdb",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            name,
        )
        return self.url(name)

    def destroy(self) -> None:
        if self.running():
            with contextlib.suppress(RuntimeError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> Postgres:
    """A new PostgreSQL server, started; skips (fails under CI) without the binaries."""
    bindir = postgres_bindir()
    if bindir is None:
        unavailable("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin")
        raise AssertionError("unreachable")
    prefix = _as_postgres_user()
    root = Path(tempfile.mkdtemp(prefix="tokenrelay-pg-"))
    root.chmod(0o755)
    if prefix:
        shutil.chown(root, "postgres", "postgres")
    server = Postgres(bindir, root, free_port(), prefix)
    initdb = [*prefix, str(bindir / "initdb"), "-D", str(server.datadir), "-U", "postgres"]
    _run(*initdb, "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
    server.start()
    return server


@dataclass
class Redis:
    """One Redis server on 127.0.0.1, without persistence."""

    port: int
    root: Path
    popen: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def destroy(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)


def start_redis() -> Redis:
    """A new Redis server, started; skips (fails under CI) without ``redis-server``."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server not found on PATH")
        raise AssertionError("unreachable")
    root = Path(tempfile.mkdtemp(prefix="tokenrelay-redis-"))
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(root), "--daemonize", "no", "--loglevel", "warning"]
    log = open(root / "redis.log", "wb")  # noqa: SIM115 - the server writes it for its life
    popen = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    server = Redis(port, root, popen)
    try:
        wait_listening(port, 15)
    except TimeoutError:
        server.destroy()
        raise RuntimeError(
            f"redis-server did not start:\n{(root / 'redis.log').read_text()}"
        ) from None
    return server


_shared: dict[str, Postgres | Redis] = {}


def shared_postgres() -> Postgres:
    """One PostgreSQL server for the whole test process (tests isolate themselves with
    ``new_database()``); stopped at exit."""
    server = _shared.get("postgres")
    if not isinstance(server, Postgres):
        server = _shared["postgres"] = start_postgres()
        atexit.register(server.destroy)
    return server


def shared_redis() -> Redis:
    """One Redis server for the whole test process (tests isolate themselves with their
    own key ids); stopped at exit."""
    server = _shared.get("redis")
    if not isinstance(server, Redis):
        server = _shared["redis"] = start_redis()
        atexit.register(server.destroy)
    return server
