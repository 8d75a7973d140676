"""How two worker processes share one port: one listening socket inherited by both
(what ``tokenrelay serve --workers N`` does) against one ``SO_REUSEPORT`` socket each.

Each worker is a minimal uvloop HTTP server that answers every request after spending
CPU on it: 1 ms usually, 20 ms for one request in ten (a long prompt, a big body), so
one worker can be busy while the other is free. The client opens a new connection per
request (as the tests' clients and many SDK calls do), ``--concurrency`` at a time,
and records which worker answered and how long it took. Prints per mode: each
worker's share of the requests, and latency p50 / p99 / max.

    .venv/bin/python bench/accept_share.py              # 2 workers, 2000 requests, c=16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import sys
import time
from collections import Counter

import uvloop

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"


def burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


async def serve(sock: socket.socket) -> None:
    pid = str(os.getpid()).encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        burn(0.02 if b"heavy" in head.split(b"\r\n", 1)[0] else 0.001)
        writer.write(RESPONSE % (len(pid), pid))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, sock=sock)
    async with server:
        await server.serve_forever()


def worker(sock: socket.socket) -> None:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    uvloop.run(serve(sock))


def listening(port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    return sock


def start(mode: str, workers: int, port: int) -> list[int]:
    pids = []
    shared = listening(port, False) if mode == "inherited" else None
    for _ in range(workers):
        sock = shared if shared is not None else listening(port, True)
        pid = os.fork()
        if pid == 0:
            worker(sock)
        pids.append(pid)
        if shared is None:
            sock.close()
    if shared is not None:
        shared.close()
    time.sleep(0.5)
    return pids


async def load(port: int, requests: int, concurrency: int) -> list[tuple[str, float]]:
    rng = random.Random(7)
    kinds = ["heavy" if rng.random() < 0.1 else "light" for _ in range(requests)]
    out: list[tuple[str, float]] = []
    queue = list(reversed(kinds))

    async def client() -> None:
        while queue:
            kind = queue.pop()
            started = time.perf_counter()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /{kind} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = await reader.read()
            writer.close()
            out.append((data.rsplit(b"\r\n\r\n", 1)[1].decode(), time.perf_counter() - started))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("| mode | round | requests per worker | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for n in range(args.rounds):
        for mode in ("inherited", "reuseport"):
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            pids = start(mode, args.workers, port)
            try:
                got = uvloop.run(load(port, args.requests, args.concurrency))
            finally:
                for pid in pids:
                    os.kill(pid, signal.SIGTERM)
                    os.waitpid(pid, 0)
            shares = sorted(Counter(w for w, _ in got).values(), reverse=True)
            ms = sorted(t * 1000 for _, t in got)
            p99 = ms[int(len(ms) * 0.99) - 1]
            print(
                f"| {mode} | {n + 1} | {' / '.join(map(str, shares))} "
                f"| {statistics.median(ms):.1f} | {p99:.1f} | {ms[-1]:.1f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
