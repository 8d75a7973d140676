"""tokenrelay's speed against a direct connection and against peers, in one run.

Starts the fake upstream, then one target at a time (direct = the fake itself,
tokenrelay with one process, LiteLLM proxy with one worker, nginx with one worker
process), each on a free loopback port, waits until it relays a real stream, and
measures with bench/loadgen.py running as its own process:

  a. time to first token at concurrency 1 and 10 (model gen/5?ttft=0); "added" is the
     target's percentile minus the direct connection's percentile;
  b. throughput at concurrency C (200) with 200 chunks per stream and no pause:
     chunks/s overall and chunks per CPU second of the target's process tree;
  c. S (500) concurrent streams of 100 chunks 50 ms apart: errors, added inter-chunk
     gap p99 (gap - 50 ms), the target's CPU seconds and peak RSS.

Writes the tables with the machine and versions to bench/out/latest.md (and the raw
numbers to bench/out/latest.json). See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import (
    BENCH,
    VENV_BIN,
    Measured,
    Noise,
    Server,
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
    write_gateway_config,
)
from peers import (
    PeerUnavailable,
    ensure_litellm,
    ensure_nginx,
    litellm_server,
    litellm_version,
    nginx_server,
    nginx_version,
)
from probes import load_line, machine_lines
from scale import RESPONSES, responses_section
from scale import measure as measure_scale
from scale import render as render_scale

TARGETS = (
    "direct",
    "tokenrelay",
    "tokenrelay-responses",
    "tokenrelay-responses-pass",
    "litellm",
    "nginx",
)
GAP_S = 0.05


@dataclass(frozen=True)
class Profile:
    ttft_model: str
    c1_requests: int
    c10_requests: int
    tp_concurrency: int
    tp_chunks: int
    tp_rounds: int
    gap_streams: int
    gap_chunks: int
    warmup: int


FULL = Profile("gen/5?ttft=0", 200, 500, 200, 200, 3, 500, 100, 30)
QUICK = Profile("gen/5?ttft=0", 50, 100, 50, 200, 1, 100, 40, 10)


def models(p: Profile) -> dict[str, str]:
    return {
        "ttft": p.ttft_model,
        "warm": "gen/5",
        "tp": f"gen/{p.tp_chunks}",
        "gap": f"gen/{p.gap_chunks}?gap={GAP_S:g}",
        "probe": "gen/1?ttft=0",
    }


# -- targets ---------------------------------------------------------------------------


def tokenrelay_server(fake_port: int, port: int, run_dir: Path, prefix: list[str]) -> Server:
    cfg = write_gateway_config(run_dir, fake_port)
    exe = VENV_BIN / "tokenrelay"
    argv = [*prefix, str(exe), "serve", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--config", str(cfg)]
    return Server("tokenrelay", argv, port, cwd=run_dir)


def model_for(target: str, model: str) -> str:
    if target in RESPONSES:
        return RESPONSES[target] + model
    return f"fake/{model}" if target == "tokenrelay" else model


def path_for(target: str) -> str:
    return "/v1/responses" if target in RESPONSES else "/v1/chat/completions"


# -- measuring one target --------------------------------------------------------------


def measure_target(
    target: str,
    port: int,
    pid: int,
    p: Profile,
    driver: list[str],
    timeout: float,
    deadline: float,
    no_store: bool = False,
    quick: bool = False,
) -> dict[str, Any]:
    m = models(p)

    def load(model: str, c: int, n: int, *, cpu: bool = False) -> Measured:
        return run_loadgen(
            port=port,
            model=model_for(target, m[model]),
            concurrency=c,
            requests=n,
            timeout=timeout,
            deadline=deadline,
            target_pid=pid if cpu else None,
            prefix=driver,
            api_key="sk-bench",
            path=path_for(target),
            no_store=no_store,
        )

    out: dict[str, Any] = {}
    step = time.monotonic()

    def log(msg: str) -> None:
        nonlocal step
        now = time.monotonic()
        print(f"  {target}: {msg} ({now - step:.1f}s)", flush=True)
        step = now

    load("ttft", 1, p.warmup)
    load("ttft", 10, p.warmup * 2)
    out["ttft_c1"] = load("ttft", 1, p.c1_requests).result
    log(f"ttft c=1 p50 {out['ttft_c1']['ttft_ms']['50']:.2f} ms")
    out["ttft_c10"] = load("ttft", 10, p.c10_requests).result
    log(f"ttft c=10 p50 {out['ttft_c10']['ttft_ms']['50']:.2f} ms")

    load("warm", p.tp_concurrency, p.tp_concurrency)  # fill connection pools
    rounds: list[dict[str, Any]] = []
    for _ in range(p.tp_rounds):
        r = load("tp", p.tp_concurrency, p.tp_concurrency, cpu=True)
        rounds.append({"result": r.result, "cpu_s": r.target_cpu_s, "rss": r.target_peak_rss_mb})
    frames = sum(r["result"]["frames"] for r in rounds)
    window = sum(r["result"]["window_s"] for r in rounds)
    cpu = sum(r["cpu_s"] or 0.0 for r in rounds)
    out["tp"] = {
        "rounds": rounds,
        "frames": frames,
        "window_s": window,
        "errors": sum(r["result"]["errors"] for r in rounds),
        "error_kinds": _merge_kinds(r["result"]["error_kinds"] for r in rounds),
        "chunks_per_s": frames / window if window else 0.0,
        "cpu_s": cpu,
        "chunks_per_cpu_s": frames / cpu if cpu else float("nan"),
        "loadgen_cpu_s": sum(r["result"]["loadgen_cpu_s"] for r in rounds),
        "frames_per_stream": rounds[-1]["result"]["frames_per_stream"],
    }
    log(f"throughput {out['tp']['chunks_per_s']:.0f} chunks/s, {cpu:.2f} CPU s")

    load("warm", p.gap_streams, p.gap_streams)
    g = load("gap", p.gap_streams, p.gap_streams, cpu=True)
    out["gap"] = {
        "result": g.result,
        "cpu_s": g.target_cpu_s,
        "peak_rss_mb": g.target_peak_rss_mb,
    }
    log(f"{p.gap_streams} streams with gaps: {g.result['errors']} errors")

    def scale_load(model: str, c: int, n: int, cpu: bool, body: int) -> Measured:
        return run_loadgen(
            port=port,
            model=model_for(target, model),
            concurrency=c,
            requests=n,
            timeout=timeout,
            deadline=deadline,
            target_pid=pid if cpu else None,
            prefix=driver,
            api_key="sk-bench",
            path=path_for(target),
            no_store=no_store,
            body_bytes=body,
        )

    out |= measure_scale(target, pid, scale_load, quick)  # sections e-g (scale.py)
    log("short streams, big bodies, thousands of streams")
    return out


def _one_line(msg: str, head: int = 300, tail: int = 500) -> str:
    msg = " ".join(msg.split())
    return msg if len(msg) <= head + tail else f"{msg[:head]} ... {msg[-tail:]}"


def _merge_kinds(kinds: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for k in kinds:
        for name, count in k.items():
            total[name] = total.get(name, 0) + count
    return total


# -- report ------------------------------------------------------------------------------


def fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def signed(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.{digits}f}"


def machine_info(args: argparse.Namespace, pinned: bool, load_before: float) -> list[str]:
    versions = (
        f"httptools {version('httptools')} (upstream client: tokenrelay.providers.transport), "
        f"msgspec {version('msgspec')}"
    )
    return [
        *machine_lines("bench/run.py", dt.datetime.now(dt.UTC), "", versions),
        f"- peers: LiteLLM proxy {litellm_version() or 'not installed'} (1 uvicorn worker), "
        f"nginx {nginx_version() or 'not installed'} (1 worker process)",
        "- fake upstream: `tokenrelay fake-upstream` (tokenrelay.fake), one process",
        load_line(load_before),
        "- CPU placement: "
        + (
            "fake upstream and load generator pinned to CPU 0, the measured target to CPU 1"
            if pinned
            else "not pinned"
        ),
    ]


def render(
    results: dict[str, dict[str, Any]],
    failures: dict[str, str],
    p: Profile,
    info: list[str],
) -> str:
    m = models(p)
    direct = results.get("direct")
    out = ["# tokenrelay bench", "", *info, ""]

    def added(target_res: dict[str, Any], key: str, q: str) -> float | None:
        if direct is None:
            return None
        return float(target_res[key]["ttft_ms"][q]) - float(direct[key]["ttft_ms"][q])

    out += [
        f"## a. Time to first token (model `{m['ttft']}`; c=1: {p.c1_requests} requests, "
        f"c=10: {p.c10_requests} requests, keep-alive connections)",
        "",
        "Added = target's percentile minus the direct connection's percentile, in ms.",
        "",
        "| target | c=1 p50 | c=1 p99 | added p50 | added p99 | c=10 p50 | c=10 p99 "
        "| added p50 | added p99 | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in TARGETS:
        if t not in results:
            continue
        r = results[t]
        c1, c10 = r["ttft_c1"], r["ttft_c10"]
        out.append(
            f"| {t} | {fmt(c1['ttft_ms']['50'])} | {fmt(c1['ttft_ms']['99'])} "
            f"| {signed(added(r, 'ttft_c1', '50'))} | {signed(added(r, 'ttft_c1', '99'))} "
            f"| {fmt(c10['ttft_ms']['50'])} | {fmt(c10['ttft_ms']['99'])} "
            f"| {signed(added(r, 'ttft_c10', '50'))} | {signed(added(r, 'ttft_c10', '99'))} "
            f"| {c1['errors'] + c10['errors']} |"
        )
    out += [
        "",
        f"## b. Throughput ({p.tp_concurrency} concurrent streams x {p.tp_chunks} chunks, "
        f"no pause, {p.tp_rounds} round(s))",
        "",
        "chunks/s = data frames received / time from first request to last frame. "
        "Target CPU = utime+stime of the target's process tree from /proc over the same "
        "window. For `direct` the target is the fake upstream itself.",
        "",
        "| target | chunks/s | target CPU s | chunks per target CPU s | CPU µs per chunk "
        "| frames/stream | errors | loadgen CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in TARGETS:
        if t not in results:
            continue
        tp = results[t]["tp"]
        per = tp["cpu_s"] / tp["frames"] * 1e6 if tp["frames"] and tp["cpu_s"] else None
        fps = tp["frames_per_stream"]
        out.append(
            f"| {t} | {fmt(tp['chunks_per_s'])} | {fmt(tp['cpu_s'])} "
            f"| {fmt(tp['chunks_per_cpu_s'])} | {fmt(per, 1)} "
            f"| {fps[0]}{'' if fps[0] == fps[1] else '-' + str(fps[1])} | {tp['errors']} "
            f"| {fmt(tp['loadgen_cpu_s'])} |"
        )
    out += [
        "",
        f"## c. {p.gap_streams} concurrent streams x {p.gap_chunks} chunks, "
        f"{GAP_S * 1000:g} ms apart (model `{m['gap']}`)",
        "",
        f"Added gap = observed gap between consecutive chunks of a stream minus "
        f"{GAP_S * 1000:g} ms, percentile over all gaps of all streams. Stream time = "
        f"request to last chunk (ideal: {(p.gap_chunks + 1) * GAP_S:g} s). "
        "Peak RSS = the largest sum of VmRSS over the target's process tree, sampled every "
        "100 ms.",
        "",
        "| target | errors | TTFT p99 ms | added gap p50 ms | added gap p99 ms "
        "| max gap ms | stream time p99 s | target CPU s | CPU µs per chunk | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in TARGETS:
        if t not in results:
            continue
        g = results[t]["gap"]
        r = g["result"]
        gap = r["gap_ms"]
        base = GAP_S * 1000
        per = g["cpu_s"] / r["frames"] * 1e6 if r["frames"] and g["cpu_s"] else None
        out.append(
            f"| {t} | {r['errors']} | {fmt(r['ttft_ms']['99'])} "
            f"| {signed(gap['50'] - base)} | {signed(gap['99'] - base)} | {fmt(gap['max'])} "
            f"| {fmt(r['stream_ms']['99'] / 1000)} "
            f"| {fmt(g['cpu_s'])} | {fmt(per, 1)} | {fmt(g['peak_rss_mb'], 1)} |"
        )
    errs = []
    for t in TARGETS:
        if t in results:
            r = results[t]
            kinds = _merge_kinds(
                [
                    r["ttft_c1"]["error_kinds"],
                    r["ttft_c10"]["error_kinds"],
                    r["tp"]["error_kinds"],
                    r["gap"]["result"]["error_kinds"],
                ]
            )
            if kinds:
                errs.append(f"- {t}: " + "; ".join(f"{k} x{v}" for k, v in kinds.items()))
    if errs:
        out += ["", "### Errors seen", "", *errs]
    out += [
        "",
        "### Other load on the machine while each target was measured",
        "",
        "CPU seconds used by processes outside this benchmark (machine busy time from "
        "/proc/stat minus the benchmark's own process tree), and time stolen by the "
        "hypervisor. Near zero means the figures above are clean.",
        "",
        "| target | wall s | other processes CPU s | steal s |",
        "|---|---:|---:|---:|",
    ]
    for t in TARGETS:
        if t in results and "noise" in results[t]:
            n = results[t]["noise"]
            out.append(
                f"| {t} | {n['wall_s']:.0f} | {n['foreign_cpu_s']:.1f} | {n['steal_s']:.1f} |"
            )
    out += responses_section(results)
    out += render_scale(results, TARGETS)
    if failures:
        out += ["", "### Not measured", ""]
        out += [f"- {t}: {why}" for t, why in failures.items()]
    return "\n".join(out) + "\n"


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="tokenrelay benchmark (see bench/README.md)")
    ap.add_argument("--only", default=",".join(TARGETS), help="comma list of " + ",".join(TARGETS))
    ap.add_argument("--quick", action="store_true", help="smaller counts, for iterating")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    ap.add_argument("--no-install", action="store_true", help="do not install missing peers")
    ap.add_argument("--no-store", action="store_true", help="Responses requests with store: false")
    ap.add_argument("--timeout", type=float, default=180.0, help="per request, seconds")
    ap.add_argument("--deadline", type=float, default=600.0, help="per load run, seconds")
    ap.add_argument("--start-timeout", type=float, default=120.0, help="per server start")
    ap.add_argument("--out", type=Path, default=BENCH / "out" / "latest.md")
    args = ap.parse_args(argv)
    only = [t.strip() for t in args.only.split(",") if t.strip()]
    bad = [t for t in only if t not in TARGETS]
    if bad:
        ap.error(f"unknown target(s) {bad}; choose from {TARGETS}")
    if "direct" not in only:
        only.insert(0, "direct")  # every "added" figure needs the direct baseline
    args.targets = [t for t in TARGETS if t in only]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    p = QUICK if args.quick else FULL
    raise_nofile()
    install_signal_handlers()
    driver, target_prefix = cpu_plan(not args.no_pin)
    run_dir = BENCH / "out" / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    m = models(p)

    load_before = os.getloadavg()[0]
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    try:
        fake = fake_server(free_port(), driver)
        fake.start()
        wait_ready(fake, lambda: probe_stream(fake.port, m["probe"]), args.start_timeout)
        print(f"bench: fake upstream on port {fake.port}", flush=True)
        for target in args.targets:
            server: Server | None = None
            try:
                if target == "direct":
                    port, pid = fake.port, fake.pid
                else:
                    port = free_port()
                    if target == "tokenrelay" or target in RESPONSES:
                        server = tokenrelay_server(fake.port, port, run_dir, target_prefix)
                    elif target == "litellm":
                        ensure_litellm(install=not args.no_install)
                        server = litellm_server(fake.port, port, list(m.values()), run_dir)
                        server.argv = [*target_prefix, *server.argv]
                    else:
                        ensure_nginx(install=not args.no_install)
                        server = nginx_server(fake.port, port, run_dir)
                        server.argv = [*target_prefix, *server.argv]
                    t0 = time.monotonic()
                    server.start()
                    probe = functools.partial(probe_stream, port, model_for(target, m["probe"]))
                    wait_ready(server, probe, args.start_timeout)
                    print(
                        f"bench: {target} ready on port {port} in {time.monotonic() - t0:.1f}s",
                        flush=True,
                    )
                    pid = server.pid
                with Noise() as noise:
                    results[target] = measure_target(
                        target,
                        port,
                        pid,
                        p,
                        driver,
                        args.timeout,
                        args.deadline,
                        args.no_store,
                        args.quick,
                    )
                results[target]["noise"] = {
                    "foreign_cpu_s": noise.foreign_s,
                    "steal_s": noise.steal_s,
                    "wall_s": noise.wall_s,
                }
                if not fake.alive():
                    raise RuntimeError("fake upstream died:\n" + fake.log_tail())
            except (PeerUnavailable, RuntimeError, TimeoutError, OSError) as e:
                failures[target] = _one_line(str(e))
                print(f"bench: {target} NOT MEASURED: {e}", file=sys.stderr, flush=True)
                if target == "direct":
                    break
            finally:
                if server is not None:
                    server.stop()
    except KeyboardInterrupt:
        print("bench: interrupted; stopping servers", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        stop_all()

    info = machine_info(args, bool(driver), load_before)
    info.append(f"- whole run: {time.monotonic() - started:.0f} s")
    report = render(results, failures, p, info)
    print()
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    args.out.with_suffix(".json").write_text(
        json.dumps({"profile": p.__dict__, "results": results, "failures": failures}, indent=1)
    )
    print(f"bench: wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0 if "direct" in results else 1


if __name__ == "__main__":
    raise SystemExit(main())
