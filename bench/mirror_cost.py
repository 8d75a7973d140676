"""What the Redis frame mirror costs per chunk: the gateway's CPU µs per delivered chunk
with and without ``redis_url``, on paced streams (each chunk arriving on its own, 50 ms
apart, as model output does), and the Redis server's own CPU per chunk.

One gateway process (``--workers 1``), the fake upstream and the load generator from
``harness.py`` (pinned as in ``run.py``: driver on CPU 0, gateway on CPU 1; Redis on CPU
0 too). Variants alternate (none, redis, none, redis, ...) so a change in the machine's
load hits both alike; each round is a fresh gateway. Prints a Markdown table and writes
``bench/out/mirror_cost.json``.

    .venv/bin/python bench/mirror_cost.py                  # 3 rounds, 200 streams x 100
    .venv/bin/python bench/mirror_cost.py --rounds 1 --streams 50
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from harness import (
    API_KEY,
    BENCH,
    LOOPBACK,
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
    tree_cpu_seconds,
    wait_ready,
    write_gateway_config,
)

GAP_S = 0.05


def redis_server(port: int, prefix: list[str]) -> Server:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("bench: redis-server not found (apt-get install redis-server)")
    argv = [*prefix, binary, "--port", str(port), "--bind", LOOPBACK, "--save", ""]
    argv += ["--appendonly", "no", "--loglevel", "warning"]
    return Server("redis", argv, port)


def gateway(fake_port: int, run_dir: Path, redis_url: str | None, prefix: list[str]) -> Server:
    extra = "local: {enabled: false}\nenv_providers: false\n"
    if redis_url:
        extra += f"redis_url: {redis_url}\n"
    cfg = write_gateway_config(run_dir, fake_port, extra)
    port = free_port()
    argv = [*prefix, str(VENV_BIN / "tokenrelay"), "serve", "--port", str(port)]
    argv += ["--config", str(cfg), "--workers", "1", "--log-level", "warning"]
    return Server("tokenrelay-mirror", argv, port, cwd=run_dir)


def one_round(
    variant: str, fake_port: int, redis: Server | None, args: argparse.Namespace, pins: tuple
) -> dict[str, float]:
    driver, target = pins
    url = f"redis://{LOOPBACK}:{redis.port}/0" if redis is not None else None
    gw = gateway(fake_port, BENCH / "out" / "mirror" / variant, url, target)
    gw.start()
    try:
        wait_ready(gw, lambda: probe_stream(gw.port, "fake/gen/1?ttft=0"), 120)
        model = f"fake/gen/{args.chunks}?gap={GAP_S:g}"
        run_loadgen(  # warm-up: connections, code paths
            port=gw.port, model="fake/gen/20", concurrency=20, requests=40, timeout=60,
            deadline=120, prefix=driver, api_key=API_KEY,
        )  # fmt: skip
        redis_cpu0 = tree_cpu_seconds(redis.pid) if redis is not None else 0.0
        m = run_loadgen(
            port=gw.port, model=model, concurrency=args.streams, requests=args.streams,
            timeout=180, deadline=600, target_pid=gw.pid, prefix=driver, api_key=API_KEY,
        )  # fmt: skip
        redis_cpu = (tree_cpu_seconds(redis.pid) - redis_cpu0) if redis is not None else 0.0
        frames = int(m.result["frames"])
        assert m.target_cpu_s is not None
        return {
            "frames": frames,
            "errors": int(m.result["errors"]),
            "gateway_cpu_s": m.target_cpu_s,
            "gateway_us_per_chunk": m.target_cpu_s / frames * 1e6,
            "redis_us_per_chunk": redis_cpu / frames * 1e6,
        }
    finally:
        gw.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--label", default="", help="a name for this code (e.g. a commit)")
    args = parser.parse_args()
    install_signal_handlers()
    raise_nofile()
    driver, target = cpu_plan(not args.no_pin)
    results: dict[str, list[dict[str, float]]] = {"none": [], "redis": []}
    fake = fake_server(free_port(), driver)
    redis = redis_server(free_port(), driver)
    try:
        fake.start()
        redis.start()
        wait_ready(fake, lambda: probe_stream(fake.port, "gen/1?ttft=0"), 60)
        time.sleep(0.5)
        for n in range(args.rounds):
            for variant in ("none", "redis"):
                got = one_round(variant, fake.port, redis if variant == "redis" else None,
                                args, (driver, target))  # fmt: skip
                results[variant].append(got)
                print(f"round {n + 1} {variant}: {got}", file=sys.stderr)
    finally:
        stop_all()
    lines = [
        f"{args.streams} streams x {args.chunks} chunks {GAP_S * 1000:g} ms apart, "
        f"{args.rounds} rounds {args.label}",
        "",
        "| redis_url | gateway CPU µs per chunk (median, min-max) | Redis CPU µs per chunk |"
        " errors |",
        "|---|---|---|---|",
    ]
    for variant, rows in results.items():
        us = [r["gateway_us_per_chunk"] for r in rows]
        redis_us = [r["redis_us_per_chunk"] for r in rows]
        lines.append(
            f"| {variant} | {statistics.median(us):.1f} ({min(us):.1f}-{max(us):.1f}) "
            f"| {statistics.median(redis_us):.1f} | {sum(int(r['errors']) for r in rows)} |"
        )
    none = statistics.median(r["gateway_us_per_chunk"] for r in results["none"])
    mirrored = statistics.median(r["gateway_us_per_chunk"] for r in results["redis"])
    lines.append("")
    lines.append(f"mirror cost: {mirrored - none:+.1f} µs of gateway CPU per chunk")
    print("\n".join(lines))
    out = BENCH / "out" / "mirror_cost.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
