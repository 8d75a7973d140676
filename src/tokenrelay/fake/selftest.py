"""Measure how many SSE events per second one core of the fake upstream writes.

``python -m tokenrelay.fake.selftest [--streams 200] [--chunks 200] [--seconds 5]``

Starts ``python -m tokenrelay.fake`` as a child process (pinned to one CPU when the
machine has two or more, the load generator to another), opens ``--streams``
keep-alive connections that each request ``gen/<chunks>`` streams back to back on the
OpenAI route, and reads ``/_fake/stats`` before and after: events written divided by the
server's own CPU seconds (``time.process_time`` inside the server) is the per-core rate,
independent of how fast the load generator is. The load generator is a bare
``asyncio.Protocol`` that only looks for the chunked terminator, so it costs far less per
event than the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from typing import Any, cast

__all__ = ["main", "run"]

_END = b"\r\n0\r\n\r\n"


class _Load(asyncio.Protocol):
    """One keep-alive connection that requests the next stream as the last one ends."""

    def __init__(self, request: bytes, state: dict[str, Any]) -> None:
        self._request = request
        self._state = state
        self._tail = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self._tail = (self._tail + data[-16:])[-16:]
        if self._tail.endswith(_END):
            self._tail = b""
            self._state["streams"] += 1
            assert self._transport is not None
            if self._state["running"]:
                self._transport.write(self._request)
            else:
                self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._state["open"] -= 1


def _stats(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/_fake/stats", timeout=10) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


async def _load(base: str, port: int, streams: int, chunks: int, seconds: float) -> int:
    body = json.dumps(
        {"model": f"gen/{chunks}", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%b" % (len(body), body)
    )
    state: dict[str, Any] = {"streams": 0, "running": True, "open": 0}
    loop = asyncio.get_running_loop()
    for _ in range(streams):
        await loop.create_connection(lambda: _Load(request, state), "127.0.0.1", port)
        state["open"] += 1
    await asyncio.sleep(seconds)
    state["running"] = False
    deadline = time.monotonic() + 10
    while state["open"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return int(state["streams"])


def run(streams: int = 200, chunks: int = 200, seconds: float = 5.0, pin: bool = True) -> str:
    """Run the measurement; returns the report line."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    command = [sys.executable, "-m", "tokenrelay.fake", "--port", "0", "--log-limit", "0"]
    if pin and len(cpus) >= 2 and shutil.which("taskset"):
        command = ["taskset", "-c", str(cpus[0]), *command]
        os.sched_setaffinity(0, set(cpus[1:]))
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        base = line.rsplit(" ", 1)[-1].strip()
        port = int(base.rsplit(":", 1)[-1])
        before = _stats(base)
        started = time.perf_counter()
        try:
            import uvloop
        except ImportError:
            done = asyncio.run(_load(base, port, streams, chunks, seconds))
        else:
            done = uvloop.run(_load(base, port, streams, chunks, seconds))
        wall = time.perf_counter() - started
        after = _stats(base)
    finally:
        server.terminate()
        server.wait(10)
    events = after["events_sent"] - before["events_sent"]
    cpu = after["cpu_seconds"] - before["cpu_seconds"]
    return (
        f"{streams} streams x gen/{chunks}: {done} streams, {events} events in {wall:.2f} s "
        f"= {events / wall:,.0f} events/s wall; server CPU {cpu:.2f} s "
        f"({100 * cpu / wall:.0f}% of a core) = {events / cpu:,.0f} events per server CPU-second"
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m tokenrelay.fake.selftest")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPUs")
    args = parser.parse_args(argv)
    print(run(args.streams, args.chunks, args.seconds, pin=not args.no_pin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
