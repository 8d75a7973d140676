"""A/B of gateway source trees on the paced workloads, alternating, on one fake upstream.

    .venv/bin/python bench/ab.py --variant base=/tmp/base/src --variant new=src --runs 3
    .venv/bin/python bench/ab.py --variant new=src --runs 1 --profile out/x.svg

Each variant is the same ``tokenrelay serve`` (this virtualenv) with ``PYTHONPATH`` set to
that source tree, pinned to CPU 1 like ``run.py``'s targets (fake upstream and load
generator on CPU 0). Per run and variant, a fresh gateway is started and measured on:
``paced`` (``--streams`` streams of 100 chunks 50 ms apart, one request each) and
``short`` (500 connections running 40-chunk streams 50 ms apart, one after another:
~250 requests/s); ``burst`` (run.py's b: 200 streams x 200 chunks, no pause). Figures: gateway CPU µs per delivered chunk (utime+stime of its
process tree over the window) and per request, added gap p99, stalls (gaps > 100 ms).
Variants alternate within each run, so a change in the machine's load hits both.
``--profile FILE``: py-spy records the first variant's gateway during the first workload.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness import (
    BENCH,
    VENV_BIN,
    Server,
    cpu_plan,
    fake_server,
    free_port,
    install_signal_handlers,
    probe_stream,
    raise_nofile,
    run_loadgen,
    stop_all,
    wait_ready,
    write_gateway_config,
)

GAP_MS = 50.0


def gateway(name: str, src: Path, fake_port: int, prefix: list[str]) -> Server:
    run_dir = BENCH / "out" / "ab" / name
    cfg = write_gateway_config(run_dir, fake_port)
    port = free_port()
    argv = [*prefix, str(VENV_BIN / "tokenrelay"), "serve", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--config", str(cfg)]
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    db = run_dir / "tokenrelay.db"
    db.unlink(missing_ok=True)
    return Server(f"ab-{name}", argv, port, env=env, cwd=run_dir)


def workload(
    port: int, pid: int, kind: str, streams: int, driver: list[str], path: str, model: str
) -> dict[str, Any]:
    if kind == "paced":
        spec = (f"{model}gen/100?gap=0.05", streams, streams)
    elif kind == "burst":  # run.py's b: 200 streams of 200 chunks back to back
        spec = (f"{model}gen/200", 200, 200)
    else:  # short: each connection runs 5 streams of 40 chunks in a row
        spec = (f"{model}gen/40?gap=0.05", 500, 2500)
    name, c, n = spec
    common = {"port": port, "timeout": 120.0, "deadline": 300.0, "prefix": driver}
    run_loadgen(
        model=name,
        concurrency=min(c, 200),
        requests=min(c, 200),
        **common,
        api_key="sk-bench",
        path=path,
    )  # warm the pools
    m = run_loadgen(
        model=name,
        concurrency=c,
        requests=n,
        target_pid=pid,
        **common,
        api_key="sk-bench",
        path=path,
    )
    r = m.result
    cpu = m.target_cpu_s or 0.0
    return {
        "errors": r["errors"],
        "frames": r["frames"],
        "requests": n,
        "cpu_s": cpu,
        "us_per_chunk": cpu / r["frames"] * 1e6 if r["frames"] else float("nan"),
        "us_per_request": cpu / n * 1e6,
        "gap_p99": r["gap_ms"]["99"] - GAP_MS,
        "gap_p50": r["gap_ms"]["50"] - GAP_MS,
        "stalls": r.get("stalls", -1),
        "ttft_p99": r["ttft_ms"]["99"],
        "rss_mb": m.target_peak_rss_mb,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", action="append", required=True, help="NAME=SRC_DIR")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--streams", type=int, default=500)
    ap.add_argument("--kinds", default="paced,short")
    ap.add_argument("--responses", action="store_true", help="Responses client, Responses wire")
    ap.add_argument("--profile", type=Path, default=None)
    args = ap.parse_args()
    variants = [(v.split("=", 1)[0], Path(v.split("=", 1)[1])) for v in args.variant]
    kinds = args.kinds.split(",")
    path = "/v1/responses" if args.responses else "/v1/chat/completions"
    model = "fakeresp/" if args.responses else "fake/"
    raise_nofile()
    install_signal_handlers()
    driver, target = cpu_plan(True)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {k: [] for k in kinds} for name, _ in variants
    }
    try:
        fake = fake_server(free_port(), driver)
        fake.start()
        wait_ready(fake, lambda: probe_stream(fake.port, "gen/1?ttft=0"), 60)
        for run in range(args.runs):
            for i, (name, src) in enumerate(variants):
                server = gateway(name, src, fake.port, target)
                server.start()
                try:
                    wait_ready(server, lambda s=server: probe_stream(s.port, "fake/gen/1"), 60)
                    for kind in kinds:
                        spy = None
                        if args.profile is not None and run == 0 and i == 0 and kind == kinds[0]:
                            spy = subprocess.Popen(
                                [
                                    str(VENV_BIN / "py-spy"),
                                    "record",
                                    "--native",
                                    "-r",
                                    "100",
                                    "--format",
                                    "raw",
                                    "-o",
                                    str(args.profile),
                                    "--pid",
                                    str(server.pid),
                                ],
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL,
                            )
                        res = workload(
                            server.port, server.pid, kind, args.streams, driver, path, model
                        )
                        if spy is not None:
                            spy.send_signal(signal.SIGINT)
                            spy.wait(30)
                        results[name][kind].append(res)
                        print(
                            f"run {run} {name} {kind}: "
                            + " ".join(
                                f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in res.items()
                            ),
                            flush=True,
                        )
                finally:
                    server.stop()
    finally:
        stop_all()
    print()
    print(
        "| variant | workload | CPU µs/chunk (runs) | median | CPU µs/request | "
        "added gap p99 ms | stalls | errors |"
    )
    print("|---|---|---|---:|---:|---|---|---:|")
    for name, _ in variants:
        for kind in kinds:
            rs = results[name][kind]
            if not rs:
                continue
            per = [r["us_per_chunk"] for r in rs]
            print(
                f"| {name} | {kind} | {', '.join(f'{x:.1f}' for x in per)} "
                f"| {statistics.median(per):.1f} "
                f"| {statistics.median(r['us_per_request'] for r in rs):.0f} "
                f"| {', '.join(format(r['gap_p99'], '+.1f') for r in rs)} "
                f"| {', '.join(str(r['stalls']) for r in rs)} "
                f"| {sum(r['errors'] for r in rs)} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
