"""Measures tokenrelay's dependency choices on the benchmark's own workload.

  i.   upstream HTTP client: read the fake upstream's 200-chunk stream at concurrency
       200 with aiohttp, httpx and tokenrelay's own transport (tokenrelay.providers.
       transport; each in its own process on its own CPU, uvloop), and the same with 100
       chunks 10 ms apart; figure: client CPU per 1000 chunks.
  ii.  JSON: decode + set ``model`` + encode every real chunk payload of
       ../shared/fixtures/streams/openai/*.sse with stdlib json, orjson and msgspec;
       figure: ns per chunk (best of several repeats).
  iii. ASGI server: bench/asgi_stream.py (200 small SSE chunks per request back to
       back, and 100 chunks 10 ms apart) served by uvicorn (httptools + uvloop) and by
       granian (1 worker, 1 runtime thread, uvloop), driven by bench/loadgen.py at
       concurrency 200; figure: chunks per server CPU second.

Writes the tables to bench/out/choices.md. ``--quick`` for smaller counts,
``--only client,json,asgi`` to pick parts.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import (
    API_KEY,
    BENCH,
    REPO,
    VENV_BIN,
    Noise,
    Server,
    cpu_model,
    cpu_plan,
    fake_server,
    free_port,
    install_signal_handlers,
    probe_stream,
    raise_nofile,
    run_loadgen,
    stop_all,
    version,
    wait_ready,
)

from tokenrelay.protocols.base import bearer as bearer_headers

FIXTURES = REPO.parent / "shared" / "fixtures" / "streams" / "openai"
CLIENTS = (
    "aiohttp",
    "aiohttp-lines",
    "aiohttp-sse",
    "httpx",
    "httpx-lines",
    "transport",
    "transport-sse",
)


def ensure_packages(*names: str) -> None:
    """pip-install into this venv whatever of ``names`` is missing (not into pyproject)."""
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        print(f"choices: installing {missing} into {VENV_BIN.parent}", flush=True)
        subprocess.run(
            [str(VENV_BIN / "pip"), "install", "--quiet", *missing], check=True, timeout=900
        )


# -- i. upstream client (runs in a child process: `choices.py _client ...`) --------------


def _count_frames(tail: bytes, data: bytes) -> tuple[int, bytes]:
    buf = tail + data if tail else data
    n = buf.count(b"\n\n")
    if n:
        return n, buf[buf.rfind(b"\n\n") + 2 :]
    return 0, buf


async def _client_main(lib: str, port: int, conc: int, rounds: int, model: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {**bearer_headers(API_KEY), "Accept": "text/event-stream"}
    errors: list[str] = []

    from tokenrelay.sse import SSEDecoder

    if lib.startswith("aiohttp"):
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=120),
        )

        async def one() -> int:
            frames = 0
            async with session.post(url, json=body, headers=headers) as r:
                if r.status != 200:
                    errors.append(f"HTTP {r.status}")
                if lib == "aiohttp-lines":
                    async for line in r.content:
                        if line.startswith(b"data:"):
                            frames += 1
                elif lib == "aiohttp-sse":  # what tokenrelay ran before its own transport
                    decoder = SSEDecoder()
                    async for data in r.content.iter_any():
                        frames += len(decoder.feed(data))
                else:
                    tail = b""
                    async for data in r.content.iter_any():
                        n, tail = _count_frames(tail, data)
                        frames += n
            return frames

        async def close() -> None:
            await session.close()

    elif lib.startswith("transport"):
        from tokenrelay.providers.transport import Pool

        pool = Pool()
        raw = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"

        async def one() -> int:
            frames = 0
            r = await pool.request("POST", url, headers, raw)
            try:
                if r.status != 200:
                    errors.append(f"HTTP {r.status}")
                if lib == "transport-sse":  # parsed into events as tokenrelay reads them
                    r.decode_with(SSEDecoder().feed)
                    while (events := await r.next()) is not None:
                        frames += len(events)
                else:
                    tail = b""
                    while (chunks := await r.next()) is not None:
                        for data in chunks:
                            n, tail = _count_frames(tail, data)
                            frames += n
            finally:
                r.close()
            return frames

        async def close() -> None:
            await pool.aclose()

    else:
        import httpx

        client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
            timeout=120,
        )

        async def one() -> int:
            frames = 0
            async with client.stream("POST", url, json=body, headers=headers) as r:
                if r.status_code != 200:
                    errors.append(f"HTTP {r.status_code}")
                if lib == "httpx-lines":
                    async for line in r.aiter_lines():
                        if line.startswith("data:"):
                            frames += 1
                else:
                    tail = b""
                    async for data in r.aiter_bytes():
                        n, tail = _count_frames(tail, data)
                        frames += n
            return frames

        async def close() -> None:
            await client.aclose()

    async def round_() -> int:
        results = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(conc))), 300)
        return sum(results) - conc  # minus one [DONE] frame per stream

    try:
        await round_()  # warm-up: opens the pool's connections
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        frames = 0
        for _ in range(rounds):
            frames += await round_()
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        await close()
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {"frames": frames, "cpu_s": cpu, "wall_s": wall, "errors": len(errors)}


def client_child(argv: list[str]) -> int:
    lib, port, conc, rounds, model = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), argv[4]
    import uvloop

    result = uvloop.run(_client_main(lib, port, conc, rounds, model))
    print(json.dumps(result))
    return 0


# Two workloads: chunks back to back (many frames per read: per-read costs are shared),
# and chunks 10 ms apart (one frame per read, as a real model streams).
BURST = "gen/200"
SPACED = "gen/100?gap=0.01"


def _client_run(lib: str, port: int, conc: int, rounds: int, model: str, cpu: list[str]) -> Any:
    me = str(Path(__file__).resolve())
    cp = subprocess.run(
        [*cpu, sys.executable, me, "_client", lib, str(port), str(conc), str(rounds), model],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if cp.returncode != 0:
        return f"failed: {' '.join(cp.stderr.split())[-300:]}"
    return json.loads(cp.stdout.strip().splitlines()[-1])


def bench_clients(args: argparse.Namespace, driver: list[str], measured: list[str]) -> list[str]:
    ensure_packages("aiohttp", "httpx")  # not tokenrelay dependencies (any more)
    conc, rounds = (50, 1) if args.quick else (200, 3)
    fake = fake_server(free_port(), driver)
    fake.start()
    rows = []
    try:
        wait_ready(fake, lambda: probe_stream(fake.port, "gen/1?ttft=0"), 60)
        for lib in CLIENTS:
            cells = []
            errors = 0
            for model in (BURST, SPACED):
                r = _client_run(lib, fake.port, conc, rounds, model, measured)
                if isinstance(r, str):
                    cells += [r, ""]
                    continue
                ms_per_k = r["cpu_s"] / r["frames"] * 1e6 if r["frames"] else float("nan")
                cells += [f"{ms_per_k:.1f}", f"{r['frames'] / r['wall_s']:,.0f}"]
                errors += r["errors"]
                print(f"  client {lib} {model}: {ms_per_k:.1f} CPU ms per 1000 chunks", flush=True)
            rows.append(f"| {lib} | {' | '.join(cells)} | {errors} |")
    finally:
        fake.stop()
    return [
        f"## i. Upstream HTTP client ({conc} concurrent streams from `tokenrelay fake-upstream`, "
        f"{rounds} rounds after a warm-up round)",
        "",
        f"burst = `{BURST}` (chunks back to back); spaced = `{SPACED}` (10 ms apart, one "
        "chunk per read). CPU = utime+stime of the client process (its own CPU). "
        "`aiohttp` = `resp.content.iter_any()`, `httpx` = `AsyncClient.stream().aiter_bytes()`, "
        "`transport` = tokenrelay's own client (`tokenrelay.providers.transport.Pool`, "
        "`Response.next()`: raw bytes per read), all with the same byte-level frame "
        "counter; `-lines` = the library's own line iterator; `transport-sse` = the "
        "connection feeds tokenrelay's `SSEDecoder` and hands over parsed events (what the "
        "gateway runs now); `aiohttp-sse` = `iter_any()` into the same `SSEDecoder` (what it "
        f"ran before). aiohttp {version('aiohttp')}, httpx {version('httpx')}, uvloop.",
        "",
        "| client | burst: CPU ms per 1000 chunks | burst: chunks/s "
        "| spaced: CPU ms per 1000 chunks | spaced: chunks/s | errors |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
    ]


# -- ii. JSON ----------------------------------------------------------------------------


def load_payloads() -> list[bytes]:
    out = []
    for path in sorted(FIXTURES.glob("*.sse")):
        for line in path.read_bytes().splitlines():
            if line.startswith(b"data:"):
                data = line[5:].strip()
                if data.startswith(b"{"):
                    out.append(data)
    return out


def bench_json(args: argparse.Namespace, pin: bool) -> list[str]:
    """In this process, on CPU 1 when pinning (the CPU the other parts measure on)."""
    before = os.sched_getaffinity(0)
    if pin:
        os.sched_setaffinity(0, {1})
    try:
        return _bench_json(args)
    finally:
        os.sched_setaffinity(0, before)


def _bench_json(args: argparse.Namespace) -> list[str]:
    ensure_packages("orjson", "msgspec")
    import msgspec
    import orjson

    payloads = load_payloads()
    if not payloads:
        return ["## ii. JSON", "", f"no fixtures found in {FIXTURES}"]
    enc_m, dec_m = msgspec.json.Encoder(), msgspec.json.Decoder()

    def std_dumps(o: Any) -> bytes:
        return json.dumps(o, separators=(",", ":"), ensure_ascii=False).encode()

    libs: dict[str, tuple[Callable[[bytes], Any], Callable[[Any], bytes]]] = {
        "json (stdlib)": (json.loads, std_dumps),
        "orjson": (orjson.loads, orjson.dumps),
        "msgspec": (dec_m.decode, enc_m.encode),
    }
    reps = 20 if args.quick else 200
    repeats = 3 if args.quick else 7
    rows = []
    for name, (loads, dumps) in libs.items():
        objs = [loads(p) for p in payloads]

        def t_decode(loads: Callable[[bytes], Any] = loads) -> None:
            for _ in range(reps):
                for p in payloads:
                    loads(p)

        def t_encode(dumps: Callable[[Any], bytes] = dumps, objs: list[Any] = objs) -> None:
            for _ in range(reps):
                for o in objs:
                    dumps(o)

        def t_relay(
            loads: Callable[[bytes], Any] = loads, dumps: Callable[[Any], bytes] = dumps
        ) -> None:
            for _ in range(reps):
                for p in payloads:
                    o = loads(p)
                    if "model" in o:
                        o["model"] = "fake/gen"
                    dumps(o)

        def best(fn: Callable[[], None]) -> float:
            # CPU time of this thread, not wall time: other work on a shared machine
            # preempting us does not count.
            times = []
            for _ in range(repeats):
                t0 = time.thread_time_ns()
                fn()
                times.append(time.thread_time_ns() - t0)
            return min(times) / (reps * len(payloads))

        d, e, r = best(t_decode), best(t_encode), best(t_relay)
        rows.append(f"| {name} | {d:,.0f} | {e:,.0f} | {r:,.0f} |")
        print(f"  json {name}: relay {r:,.0f} ns/chunk", flush=True)
    avg = sum(len(p) for p in payloads) / len(payloads)
    return [
        f"## ii. JSON ({len(payloads)} real payloads from "
        f"shared/fixtures/streams/openai/*.sse, mean {avg:.0f} bytes; best of {repeats})",
        "",
        "relay = decode, replace `model`, encode: what a gateway does per chunk. Time = this "
        "thread's CPU time (`time.thread_time_ns`), best of the repeats. "
        f"orjson {version('orjson')}, msgspec {version('msgspec')} "
        "(untyped `msgspec.json.Decoder()`/`Encoder()`).",
        "",
        "| library | decode ns/chunk | encode ns/chunk | relay ns/chunk |",
        "|---|---:|---:|---:|",
        *rows,
    ]


# -- iii. ASGI server --------------------------------------------------------------------


def _asgi_measure(
    server: Server, conc: int, rounds: int, path: str, driver: list[str]
) -> tuple[float, float, float, int]:
    """(frames, server CPU s, window s, errors) over ``rounds`` after one warm-up."""

    def once(pid: int | None) -> Any:
        return run_loadgen(
            port=server.port,
            model="gen/200",
            concurrency=conc,
            requests=conc,
            timeout=120,
            deadline=300,
            target_pid=pid,
            prefix=driver,
            path=path,
        )

    once(None)
    frames = cpu = window = 0.0
    errors = 0
    for _ in range(rounds):
        m = once(server.pid)
        frames += m.result["frames"]
        window += m.result["window_s"]
        errors += m.result["errors"]
        cpu += m.target_cpu_s or 0.0
    return frames, cpu, window, errors


def bench_asgi(args: argparse.Namespace, driver: list[str], measured: list[str]) -> list[str]:
    ensure_packages("granian")
    conc, rounds = (50, 1) if args.quick else (200, 5)
    paths = ("/v1/chat/completions", "/v1/chat/completions?n=100&gap=0.01")  # burst, spaced
    rows = []
    for name in ("uvicorn", "granian"):
        port = free_port()
        if name == "uvicorn":
            argv = [sys.executable, "-m", "uvicorn", "asgi_stream:app", "--app-dir", str(BENCH)]
            argv += ["--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop"]
            argv += ["--http", "httptools", "--no-access-log", "--log-level", "warning"]
        else:
            argv = [str(VENV_BIN / "granian"), "--interface", "asgi", "--host", "127.0.0.1"]
            argv += ["--port", str(port), "--workers", "1", "--runtime-threads", "1"]
            argv += ["--loop", "uvloop", "--no-ws", "--log-level", "warning"]
            argv += ["--working-dir", str(BENCH), "asgi_stream:app"]
        server = Server(f"asgi-{name}", [*measured, *argv], port, cwd=BENCH)
        server.start()
        cells = []
        errors = 0
        try:
            wait_ready(server, functools.partial(probe_stream, port, "gen/200"), 60)
            for path in paths:
                frames, cpu, window, errs = _asgi_measure(server, conc, rounds, path, driver)
                errors += errs
                per_cpu = frames / cpu if cpu else float("nan")
                cells += [f"{per_cpu:,.0f}", f"{cpu * 1e6 / frames:.1f}", f"{frames / window:,.0f}"]
                print(f"  asgi {name} {path}: {per_cpu:,.0f} chunks per CPU s", flush=True)
            rows.append(f"| {name} {version(name)} | {' | '.join(cells)} | {errors} |")
        except (RuntimeError, TimeoutError, OSError, ZeroDivisionError) as e:
            rows.append(f"| {name} | failed: {' '.join(str(e).split())[-300:]} |")
        finally:
            server.stop()
    return [
        f"## iii. ASGI server (bench/asgi_stream.py, {conc} concurrent streams, {rounds} rounds "
        "after a warm-up round)",
        "",
        "burst = 200 chunks back to back; spaced = 100 chunks 10 ms apart. "
        "uvicorn: `--loop uvloop --http httptools --no-access-log`, one process. granian: "
        "`--interface asgi --workers 1 --runtime-threads 1 --loop uvloop`. "
        "Server CPU = utime+stime of the server's process tree from /proc.",
        "",
        "| server | burst: chunks per server CPU s | burst: CPU µs per chunk | burst: chunks/s "
        "| spaced: chunks per server CPU s | spaced: CPU µs per chunk | spaced: chunks/s "
        "| errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]


# -- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_client":
        return client_child(argv[1:])
    ap = argparse.ArgumentParser(description="measure tokenrelay's dependency choices")
    ap.add_argument("--only", default="client,json,asgi")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--out", type=Path, default=BENCH / "out" / "choices.md")
    args = ap.parse_args(argv)
    parts = {p.strip() for p in args.only.split(",")}
    raise_nofile()
    install_signal_handlers()
    driver, measured = cpu_plan(not args.no_pin)
    out = [
        "# tokenrelay dependency choices",
        "",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- command: `python bench/choices.py {' '.join(argv)}`".rstrip(),
        f"- machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}; python "
        f"{platform.python_version()}; uvloop {version('uvloop')}",
        "- CPU placement: "
        + ("measured process on CPU 1, fake upstream / loadgen on CPU 0" if driver else "none"),
        "",
    ]
    started = time.monotonic()
    noise: list[str] = []

    def part(name: str, fn: Callable[[], list[str]]) -> None:
        nonlocal out
        with Noise() as n:
            out += [*fn(), ""]
        noise.append(f"| {name} | {n.wall_s:.0f} | {n.foreign_s:.1f} | {n.steal_s:.1f} |")

    try:
        if "client" in parts:
            part("i. client", lambda: bench_clients(args, driver, measured))
        if "json" in parts:
            part("ii. JSON", lambda: bench_json(args, pin=bool(measured)))
        if "asgi" in parts:
            part("iii. ASGI", lambda: bench_asgi(args, driver, measured))
    except KeyboardInterrupt:
        print("choices: interrupted", file=sys.stderr)
        return 130
    finally:
        stop_all()
    out += [
        "## Other load on the machine during each part",
        "",
        "CPU seconds used by processes outside this benchmark (see bench/README.md); "
        "near zero means clean figures.",
        "",
        "| part | wall s | other processes CPU s | steal s |",
        "|---|---:|---:|---:|",
        *noise,
        "",
        f"whole run: {time.monotonic() - started:.0f} s",
    ]
    report = "\n".join(out) + "\n"
    print()
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"choices: wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
