"""Soak: many concurrent streams through one tokenrelay process, a share of whose clients
drop their connection at random points and re-attach with ``Last-Event-ID``.

Starts the fake upstream and one ``tokenrelay serve`` (provider ``fake``, ``streams:
{grace: 10, retention: 5}``) on free loopback ports, then, in this process (one uvloop
event loop, one ``asyncio.Protocol`` per connection, the HTTP/1.1 decoding of
bench/loadgen.py plus SSE ``id:`` parsing):

1. a direct baseline: the same streams straight to the fake upstream, no drops (the
   stalls and TTFT the harness itself causes);
2. a warm-up through the gateway, then its idle RSS (the baseline);
3. R rounds of S streams of ``fake/gen/<N>?gap=<G>`` started over a ramp; a share of the
   clients close their socket after a random frame (``close()`` or ``abort()``), pause
   0-2 s and re-attach with ``GET /v1/streams/{id}`` + ``Last-Event-ID``, possibly again;
   every stream's text, sequence numbers and ``[DONE]`` are checked against an
   uninterrupted answer; gaps between frames are measured only while attached;
4. after each round, the gateway's RSS idle for 10 s, then after one request (the hub
   evicts finished streams past retention only when a stream is created or ends).

Prints a markdown report and writes it to bench/out/soak.md (raw figures in
bench/out/soak.json). See bench/README.md, "Soak".

This file runs the soak (servers, rounds, the gateway's state dumps); the client is
soak_client.py, the gateway probes shared with run.py are probes.py, and the judging
and the report are soak_report.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import resource
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from harness import (
    BENCH,
    LOOPBACK,
    VENV_BIN,
    Noise,
    Server,
    cpu_plan,
    descendants,
    fake_server,
    free_port,
    install_signal_handlers,
    probe_stream,
    raise_nofile,
    stop_all,
    tree_cpu_seconds,
    version,
    wait_ready,
    write_gateway_config,
)
from loadgen import percentile
from probes import (
    Sampler,
    load_line,
    log_lines,
    log_summary,
    loop_lag,
    machine_lines,
    sched_wait_s,
    scrape_metrics,
)
from soak_client import Flow, Load, Opts, one_request, plan_flows, run_flow
from soak_report import judge, noise_dict, render

# The gateway is ``tokenrelay serve`` run through tokenrelay.cli.main in a python -c
# launcher that adds one thing: on SIGUSR1 it writes its state to $SOAK_DIAG (the hub's
# streams and bytes, gc and allocator figures); soak.py asks for it only while idle.
LAUNCHER = r"""
import ctypes, gc, json, os, signal, sys, time
from collections import Counter

class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        return libc
    except (OSError, AttributeError):
        return None

_LIBC = _libc()

def _rss():
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def _dump(signum, frame):
    path = os.environ["SOAK_DIAG"]
    try:
        with open(path + ".req") as f:
            req = json.load(f)
    except (OSError, ValueError):
        req = {}
    out = {"tag": req.get("tag"), "rss_mb_before": _rss()}
    if req.get("collect"):
        out["gc_collected"] = gc.collect()
    if req.get("trim") and _LIBC is not None:
        out["malloc_trim"] = _LIBC.malloc_trim(0)
    objs = gc.get_objects()
    types = Counter(type(o).__name__ for o in objs)
    out["gc_objects"] = len(objs)
    out["gc_count"] = gc.get_count()
    out["types"] = dict(types.most_common(25))
    out["allocated_blocks"] = sys.getallocatedblocks()
    for o in objs:
        if type(o).__name__ == "StreamHub":
            fin = list(o._finished_streams.values())
            now = time.monotonic()
            out["hub"] = {
                "live": len(o._live),
                "finished": len(fin),
                "finished_past_retention": sum(
                    1 for s in fin
                    if s.finished_at is not None and now - s.finished_at > o.settings.retention),
                "total_bytes": o.total_bytes,
                "frames_kept": sum(len(s.frames) for s in fin) + sum(
                    len(s.frames) for s in o._live.values()),
                "evicted_ids": len(o._evicted),
                "background_tasks": len(o.background),
            }
    out["stream_objects"] = types.get("Stream", 0)
    out["upstream_conns"] = types.get("_Conn", 0) or types.get("ResponseHandler", 0)
    out["fds"] = len(os.listdir("/proc/self/fd"))
    if _LIBC is not None:
        m = _LIBC.mallinfo2()
        out["malloc"] = {k: getattr(m, k) / 2**20 for k in ("arena", "hblkhd", "uordblks", "fordblks", "keepcost")}
    del objs
    # pymalloc's arenas (mmapped, not in mallinfo): sys._debugmallocstats() to stderr.
    tmp = path + ".mstats"
    saved = os.dup(2)
    try:
        with open(tmp, "w") as f:
            os.dup2(f.fileno(), 2)
            sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    stats = {}
    with open(tmp) as f:
        for line in f:
            k, eq, v = line.rpartition("=")
            if eq and v.strip().replace(",", "").isdigit():
                stats[" ".join(k.split())] = int(v.strip().replace(",", ""))
    out["pymalloc"] = {
        "arenas": stats.get("# arenas allocated current"),
        "allocated_mb": stats.get("# bytes in allocated blocks", 0) / 2**20,
        "available_mb": stats.get("# bytes in available blocks", 0) / 2**20,
        "unused_pools_mb": sum(v for k, v in stats.items() if "unused pools" in k) / 2**20,
    }
    out["rss_mb"] = _rss()
    with open(path + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(path + ".tmp", path)

signal.signal(signal.SIGUSR1, _dump)
from tokenrelay.cli import main
sys.exit(main(sys.argv[1:]))
"""


async def diag(gw: Server, path: Path, tag: str, **req: bool) -> dict[str, Any]:
    """The gateway's own state (see LAUNCHER); {} if it does not answer within 10 s."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    path.with_name(path.name + ".req").write_text(json.dumps({"tag": tag, **req}))
    os.kill(gw.pid, signal.SIGUSR1)
    for _ in range(200):
        await asyncio.sleep(0.05)
        if path.exists():
            with contextlib.suppress(ValueError):
                return dict(json.loads(path.read_text()))
    return {}


# -- one round --------------------------------------------------------------------------


async def run_round(
    port: int, model: str, o: Opts, rng: random.Random, *, direct: bool, streams: int
) -> tuple[list[Flow], dict[str, Any]]:
    events = o.chunks + 3  # role chunk, N text chunks, finish chunk, [DONE]
    flows = plan_flows(
        streams, events, o.ramp, 0.0 if direct else o.share, rng, direct, o.max_drops
    )
    load = Load()
    loop = asyncio.get_running_loop()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = loop.time()
    tasks = [
        loop.create_task(run_flow(f, port, model, t0 + 0.05, o.timeout, load, o.max_drops + 1))
        for f in flows
    ]
    lags: list[float] = []
    monitor = loop.create_task(loop_lag(lags))
    _, pending = await asyncio.wait(tasks, timeout=o.deadline)
    monitor.cancel()
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending, timeout=10)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    lags.sort()
    info = {
        "wall_s": loop.time() - t0,
        "deadline_hit": len(pending),
        "peak_attached": load.peak,
        "client_cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
        "client_lag_ms": {"99": percentile(lags, 99), "max": lags[-1] if lags else float("nan")},
    }
    return flows, info


# -- the run ----------------------------------------------------------------------------


def gateway_config(fake_port: int, run_dir: Path, grace: float, retention: float) -> Path:
    extra = "env_providers: false\n"
    extra += f"streams: {{grace: {grace:g}, retention: {retention:g}}}\n"
    return write_gateway_config(run_dir, fake_port, extra)


async def soak(args: argparse.Namespace, fake: Server, gw: Server, o: Opts) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    rng = random.Random(o.seed)
    out: dict[str, Any] = {"rounds": [], "diag": {}}
    diag_path = BENCH / "out" / "soak" / "diag.json"

    async def state(tag: str, **req: bool) -> dict[str, Any]:
        if args.no_diag:
            return {}
        d = await diag(gw, diag_path, tag, **req)
        out["diag"][tag] = d
        return d

    gen = f"gen/{o.chunks}?gap={o.gap:g}"

    def say(msg: str) -> None:
        print(f"soak: {msg}", flush=True)

    if not args.no_direct:
        with Noise() as noise:
            flows, info = await run_round(fake.port, gen, o, rng, direct=True, streams=o.streams)
        out["direct"] = judge(flows, o) | info | {"noise": noise_dict(noise)}
        d = out["direct"]
        say(
            f"direct: {d['errors']} errors, {d['stalls']} stalls, TTFT p99 "
            f"{d['ttft_ms']['99']:.1f} ms ({info['wall_s']:.1f}s)"
        )

    pids = descendants(gw.pid)
    sampler = Sampler(pids)
    sampler.start()
    try:
        # Warm-up: every code path (streams, drops, resumes) once, then idle.
        warm = Opts(**(vars(o) | {"chunks": 20, "gap": 0.01, "ramp": 0.5, "deadline": 60}))
        wflows, _ = await run_round(
            gw.port, "fake/gen/20?gap=0.01", warm, rng, direct=False, streams=100
        )
        wj = judge(wflows, warm)
        say(f"warm-up: {wj['errors']} errors, {wj['resumes']} resumes, {wj['exact']}/100 exact")
        await asyncio.sleep(args.retention + 1)
        why = await one_request(gw.port)
        await asyncio.sleep(1.0)
        base = [sampler.sample()]
        for _ in range(9):
            await asyncio.sleep(0.1)
            base.append(sampler.sample())
        out["baseline_rss_mb"] = sorted(base)[len(base) // 2]
        await state("baseline")
        out["warmup"] = {"errors": wj["errors"], "exact": wj["exact"], "probe": why}
        say(f"baseline RSS {out['baseline_rss_mb']:.1f} MB")

        offset = gw.log_path.stat().st_size if gw.log_path else 0
        for r in range(args.rounds):
            cpu0 = tree_cpu_seconds(gw.pid)
            fcpu0 = tree_cpu_seconds(fake.pid)
            waits0 = [sched_wait_s(p) for p in (gw.pid, fake.pid, os.getpid())]
            t_start = time.monotonic()
            with Noise() as noise:
                flows, info = await run_round(
                    gw.port, f"fake/{gen}", o, rng, direct=False, streams=o.streams
                )
                cpu1 = tree_cpu_seconds(gw.pid)
                fcpu1 = tree_cpu_seconds(fake.pid)
                waits1 = [sched_wait_s(p) for p in (gw.pid, fake.pid, os.getpid())]
            res = judge(flows, o) | info
            res["noise"] = noise_dict(noise)
            res["gateway_cpu_s"] = cpu1 - cpu0
            res["cpu_wait_s"] = {
                k: b - a
                for k, a, b in zip(("gateway", "fake", "client"), waits0, waits1, strict=True)
            }
            res["fake_cpu_s"] = fcpu1 - fcpu0
            produced = o.streams * (o.chunks + 3)
            res["events_produced"] = produced
            res["gateway_us_per_event"] = (cpu1 - cpu0) / produced * 1e6
            res["gateway_us_per_frame_delivered"] = (cpu1 - cpu0) / max(1, res["frames"]) * 1e6
            res["peak_rss_mb"] = sampler.peak_since(t_start)
            res["gateway_busy"] = sampler.busy(t_start, time.monotonic())
            res["end_rss_mb"] = sampler.sample()
            say(
                f"round {r + 1}: {res['errors']} errors, {res['resumes']} resumes, "
                f"{res['exact']}/{res['streams']} exact, {res['stalls']} stalls, peak RSS "
                f"{res['peak_rss_mb']:.1f} MB ({info['wall_s']:.1f}s)"
            )
            # Idle: nothing is sent for ``settle`` seconds.
            await asyncio.sleep(args.settle)
            res["idle_rss_mb"] = sampler.sample()
            res["diag_idle"] = await state(f"round{r + 1}-idle")
            res["metrics_idle"] = await loop.run_in_executor(None, scrape_metrics, gw.port)
            # One request: the hub evicts finished streams past retention on create/finish.
            res["probe"] = await one_request(gw.port)
            await asyncio.sleep(1.0)
            res["swept_rss_mb"] = sampler.sample()
            res["diag_swept"] = await state(f"round{r + 1}-swept")
            res["metrics"] = await loop.run_in_executor(None, scrape_metrics, gw.port)
            if gw.log_path is not None:
                res["log"] = log_summary(gw.log_path, offset)
                offset = gw.log_path.stat().st_size
                ids = [x["request_id"] for x in res["inexact_examples"] if x.get("request_id")]
                lines = log_lines(gw.log_path, ids)
                for x in res["inexact_examples"]:
                    x["access_log"] = lines.get(x.get("request_id") or "", "not found")
            say(
                f"round {r + 1}: RSS idle +{args.settle:g}s {res['idle_rss_mb']:.1f} MB, "
                f"after one request {res['swept_rss_mb']:.1f} MB"
            )
            out["rounds"].append(res)
        if args.final_idle > 0:
            # The upstream connection pool closes connections idle for 30 s (its default).
            await asyncio.sleep(args.final_idle)
            await one_request(gw.port)
            await asyncio.sleep(1.0)
            out["final_idle_rss_mb"] = sampler.sample()
            out["final_idle"] = args.final_idle
            await state(f"idle+{args.final_idle:g}s")
            say(f"after {args.final_idle:g} s more idle: RSS {out['final_idle_rss_mb']:.1f} MB")
        if not args.no_diag:
            # Is what stays live objects, or memory the allocators keep? A full collection,
            # then glibc's malloc_trim(0) (returns free heap pages to the system).
            await state("end-gc", collect=True)
            await asyncio.sleep(0.5)
            await state("end-trim", collect=True, trim=True)
            await asyncio.sleep(0.5)
            out["trimmed_rss_mb"] = sampler.sample()
    finally:
        await sampler.stop()
    out["rss_timeline"] = sampler.timeline
    return out


def machine_info(
    args: argparse.Namespace, pinned: bool, load_before: float, started_at: dt.datetime
) -> list[str]:
    return [
        *machine_lines(
            "bench/soak.py", started_at, " (start of the run)", f"aiohttp {version('aiohttp')}"
        ),
        f"- gateway: one `tokenrelay serve` process, config `streams: {{grace: {args.grace:g}, "
        f"retention: {args.retention:g}}}`, default logging (one access line per stream)"
        + (f"; environment {' '.join(args.gateway_env)}" if args.gateway_env else ""),
        "- CPU placement: "
        + (
            "fake upstream and this client pinned to CPU 0, the gateway to CPU 1"
            if pinned
            else "not pinned"
        ),
        load_line(load_before),
    ]


# -- main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="tokenrelay soak (see bench/README.md, Soak)")
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--gap", type=float, default=0.04, help="seconds between upstream chunks")
    ap.add_argument("--chunks", type=int, default=150)
    ap.add_argument("--drop-share", type=float, default=0.2, help="share of clients that drop")
    ap.add_argument("--max-drops", type=int, default=4, help="drops per dropping client, at most")
    ap.add_argument("--ramp", type=float, default=2.0, help="seconds over which streams start")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--grace", type=float, default=10.0, help="gateway streams.grace")
    ap.add_argument("--retention", type=float, default=5.0, help="gateway streams.retention")
    ap.add_argument("--settle", type=float, default=10.0, help="idle seconds after a round")
    ap.add_argument(
        "--final-idle", type=float, default=35.0, help="idle seconds after the last round (0: none)"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="200 streams x 50 chunks, one round")
    ap.add_argument("--no-direct", action="store_true", help="skip the direct baseline")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    ap.add_argument("--no-diag", action="store_true", help="plain `tokenrelay serve`, no dumps")
    ap.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the gateway (e.g. PYTHONMALLOC=malloc); repeatable",
    )
    ap.add_argument("--timeout", type=float, default=120.0, help="per attachment, seconds")
    ap.add_argument("--deadline", type=float, default=240.0, help="per round, seconds")
    ap.add_argument("--start-timeout", type=float, default=60.0)
    ap.add_argument("--out", type=Path, default=BENCH / "out" / "soak.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.streams, args.chunks, args.rounds = 200, 50, 1
    if any("=" not in kv for kv in args.gateway_env):
        ap.error("--gateway-env takes KEY=VALUE")
    if args.streams < 1 or args.chunks < 1 or not 0 <= args.drop_share <= 1:
        ap.error("--streams and --chunks must be >= 1, --drop-share in [0, 1]")
    args.rounds = max(1, min(args.rounds, 10))
    args.max_drops = max(1, min(args.max_drops, 20))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    o = Opts(
        streams=args.streams,
        gap=args.gap,
        chunks=args.chunks,
        share=args.drop_share,
        ramp=args.ramp,
        max_drops=args.max_drops,
        timeout=args.timeout,
        deadline=args.deadline,
        seed=args.seed,
    )
    raise_nofile()
    install_signal_handlers()
    driver, target = cpu_plan(not args.no_pin)
    run_dir = BENCH / "out" / "soak"
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    started_at = dt.datetime.now(dt.UTC)
    try:
        fake = fake_server(free_port(), driver)
        fake.log_path = run_dir / "fake-upstream.log"
        fake.start()
        wait_ready(fake, lambda: probe_stream(fake.port, "gen/1?ttft=0"), args.start_timeout)
        port = free_port()
        cfg = gateway_config(fake.port, run_dir, args.grace, args.retention)
        if args.no_diag:
            argv_gw = [*target, str(VENV_BIN / "tokenrelay"), "serve"]
        else:
            argv_gw = [*target, sys.executable, "-c", LAUNCHER, "serve"]
        argv_gw += ["--host", LOOPBACK, "--port", str(port), "--config", str(cfg)]
        env = dict(os.environ, SOAK_DIAG=str(run_dir / "diag.json"))
        env.update(kv.split("=", 1) for kv in args.gateway_env)
        gw = Server("tokenrelay", argv_gw, port, env=env, cwd=run_dir)
        gw.log_path = run_dir / "tokenrelay.log"
        gw.start()
        wait_ready(gw, lambda: probe_stream(port, "fake/gen/1?ttft=0"), args.start_timeout)
        print(f"soak: fake upstream on {fake.port}, tokenrelay on {port}", flush=True)
        if driver:
            os.sched_setaffinity(0, {0})  # this client shares CPU 0 with the fake upstream
        try:
            import uvloop

            out = uvloop.run(soak(args, fake, gw, o))
        except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
            out = asyncio.run(soak(args, fake, gw, o))
        if not gw.alive():
            raise RuntimeError("tokenrelay died:\n" + gw.log_tail())
    except KeyboardInterrupt:
        print("soak: interrupted; stopping servers", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        stop_all()
    info = machine_info(args, bool(driver), load_before, started_at)
    info.append(f"- whole run: {time.monotonic() - started:.0f} s")
    report = render(out, o, args, info)
    print()
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=1, default=str))
    print(f"soak: wrote {args.out} and {args.out.with_suffix('.json')}")
    bad = any(r["errors"] or r["exact"] != r["streams"] for r in out["rounds"])
    return 2 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
