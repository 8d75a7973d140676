"""Sections d-g of ``make bench``: d. the Responses paths beside the chat passthrough
(issue 13); e-g (issue 17): short streams, big request bodies, and
thousands of paced streams, measured by run.py on each target after a-c.

  e. short streams: 500 connections, each running 40-chunk streams (50 ms apart) one
     after another, so every stream is also a new request (~250 requests/s): the whole
     cost of a short stream (per request and per chunk), CPU µs per chunk and per request.
  f. big bodies: TTFT at c=1 with request bodies of ~1 KB, 100 KB, 500 KB and 1 MB (an
     agent's context: ~1 KB turns of text with quotes and escapes), added over direct.
  g. thousands of streams: 1,000 and 2,000 concurrent paced streams (100 chunks, 50 ms
     apart), one gateway process: added gap p99, stalls (gaps over 100 ms, i.e. added
     > 50 ms), CPU µs per chunk, RSS per stream (peak RSS over the run minus the RSS
     before it, over the streams).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from harness import Measured, tree_rss_mb

# The Responses client path (POST /v1/responses) of the same gateway: translated onto
# the fake's OpenAI chat wire, and passed through to the fake's Responses wire.
RESPONSES = {"tokenrelay-responses": "fake/", "tokenrelay-responses-pass": "fakeresp/"}

# Which targets get which section (LiteLLM's ~0.6 ms per chunk would take minutes here).
SHORT_TARGETS = ("direct", "tokenrelay", "nginx")
BODY_TARGETS = (
    "direct",
    "tokenrelay",
    "tokenrelay-responses",
    "tokenrelay-responses-pass",
    "nginx",
)
MANY_TARGETS = ("direct", "tokenrelay", "nginx")
BODY_SIZES = (1_000, 100_000, 500_000, 1_000_000)
GAP_MS = 50.0

# model, concurrency, requests, cpu, body bytes -> the measurement
Load = Callable[[str, int, int, bool, int], Measured]


def measure(target: str, pid: int, load: Load, quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if target in SHORT_TARGETS:
        c, n = (100, 300) if quick else (500, 2500)
        load("gen/40?gap=0.05", min(c, 200), min(c, 200), False, 0)  # warm the pools
        m = load("gen/40?gap=0.05", c, n, True, 0)
        out["short"] = _paced(m, n)
    if target in BODY_TARGETS:
        out["bodies"] = {}
        n = 10 if quick else 40
        for size in BODY_SIZES:
            load("gen/5?ttft=0", 1, 5, False, size)  # warm-up, not counted
            m = load("gen/5?ttft=0", 1, n, False, size)
            out["bodies"][str(size)] = m.result["ttft_ms"] | {"errors": m.result["errors"]}
    if target in MANY_TARGETS:
        out["many"] = {}
        for streams in (200, 400) if quick else (1000, 2000):
            rss0 = tree_rss_mb(pid)
            m = load("gen/100?gap=0.05", streams, streams, True, 0)
            res = _paced(m, streams)
            res["rss_before_mb"] = rss0
            res["rss_per_stream_kb"] = (
                (m.target_peak_rss_mb - rss0) * 1024 / streams if m.target_peak_rss_mb else None
            )
            out["many"][str(streams)] = res
    return out


def _paced(m: Measured, requests: int) -> dict[str, Any]:
    r = m.result
    cpu = m.target_cpu_s
    return {
        "errors": r["errors"],
        "error_kinds": r["error_kinds"],
        "frames": r["frames"],
        "requests": requests,
        "cpu_s": cpu,
        "us_per_chunk": cpu / r["frames"] * 1e6 if cpu and r["frames"] else None,
        "us_per_request": cpu / requests * 1e6 if cpu else None,
        "ttft_p99_ms": r["ttft_ms"]["99"],
        "gap_p50_ms": r["gap_ms"]["50"] - GAP_MS,
        "gap_p99_ms": r["gap_ms"]["99"] - GAP_MS,
        "gap_max_ms": r["gap_ms"]["max"],
        "stalls": r.get("stalls"),
        "gaps": r["gap_ms"]["n"],
        "stream_p99_s": r["stream_ms"]["99"] / 1000,
        "peak_rss_mb": m.target_peak_rss_mb,
    }


def _f(x: float | None, digits: int = 1, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.{digits}f}" if sign else f"{x:,.{digits}f}"


def render(results: dict[str, dict[str, Any]], targets: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    rows = [(t, results[t]["short"]) for t in targets if "short" in results.get(t, {})]
    if rows:
        r0 = rows[0][1]
        out += [
            "",
            f"## e. Short streams: {r0['requests']} streams of 40 chunks 50 ms apart, "
            "run back to back on 500 connections (each stream a new request)",
            "",
            "CPU per chunk and per request = the target's CPU over the run / chunks "
            "delivered (or streams). Stalls = gaps between two chunks over 100 ms.",
            "",
            "| target | errors | CPU µs per chunk | CPU µs per request | added gap p50 ms "
            "| added gap p99 ms | stalls | TTFT p99 ms | target CPU s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for t, r in rows:
            out.append(
                f"| {t} | {r['errors']} | {_f(r['us_per_chunk'])} | {_f(r['us_per_request'], 0)} "
                f"| {_f(r['gap_p50_ms'], 2, True)} | {_f(r['gap_p99_ms'], 2, True)} "
                f"| {r['stalls']} of {r['gaps']:,} | {_f(r['ttft_p99_ms'], 1)} "
                f"| {_f(r['cpu_s'], 2)} |"
            )
    rows = [(t, results[t]["bodies"]) for t in targets if "bodies" in results.get(t, {})]
    if rows:
        direct = results.get("direct", {}).get("bodies")
        sizes = [str(s) for s in BODY_SIZES]
        out += [
            "",
            "## f. Big request bodies: TTFT at c=1 by body size (model `gen/5?ttft=0`)",
            "",
            "p50 (added p50 over direct) in ms; the body is an agent's context of ~1 KB "
            "turns. tokenrelay = chat passthrough; -responses = Responses client on the "
            "chat wire (translated); -responses-pass = Responses passthrough.",
            "",
            "| target | " + " | ".join(f"{int(s) // 1000} KB" for s in sizes) + " | errors |",
            "|---|" + "---:|" * (len(sizes) + 1),
        ]
        for t, b in rows:
            cells = []
            for s in sizes:
                p50 = b[s]["50"]
                add = p50 - direct[s]["50"] if direct and t != "direct" else None
                cells.append(f"{p50:.2f}" + (f" ({add:+.2f})" if add is not None else ""))
            errors = sum(b[s]["errors"] for s in sizes)
            out.append(f"| {t} | " + " | ".join(cells) + f" | {errors} |")
        out += [
            "",
            "p99 (added p99):",
            "",
            "| target | " + " | ".join(f"{int(s) // 1000} KB" for s in sizes) + " |",
            "|---|" + "---:|" * len(sizes),
        ]
        for t, b in rows:
            cells = []
            for s in sizes:
                p99 = b[s]["99"]
                add = p99 - direct[s]["99"] if direct and t != "direct" else None
                cells.append(f"{p99:.2f}" + (f" ({add:+.2f})" if add is not None else ""))
            out.append(f"| {t} | " + " | ".join(cells) + " |")
    rows = [(t, results[t]["many"]) for t in targets if "many" in results.get(t, {})]
    if rows:
        out += [
            "",
            "## g. Thousands of paced streams (100 chunks, 50 ms apart; one gateway process)",
            "",
            "Stalls = gaps over 100 ms (added > 50 ms). RSS per stream = (peak RSS - RSS "
            "before the run) / streams.",
            "",
            "| target | streams | errors | added gap p50 ms | added gap p99 ms | max gap ms "
            "| stalls | CPU µs per chunk | TTFT p99 ms | stream time p99 s | RSS per stream KB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for t, many in rows:
            for n, r in many.items():
                out.append(
                    f"| {t} | {n} | {r['errors']} | {_f(r['gap_p50_ms'], 2, True)} "
                    f"| {_f(r['gap_p99_ms'], 2, True)} | {_f(r['gap_max_ms'], 0)} "
                    f"| {r['stalls']} of {r['gaps']:,} | {_f(r['us_per_chunk'])} "
                    f"| {_f(r['ttft_p99_ms'], 1)} | {_f(r['stream_p99_s'], 2)} "
                    f"| {_f(r['rss_per_stream_kb'], 1)} |"
                )
    return out


def responses_section(results: dict[str, dict[str, Any]]) -> list[str]:
    """The Responses client paths against the chat passthrough of the same run (a
    Responses chunk is an ``output_text.delta`` event; the framing events are not
    counted). Targets: passthrough >= 0.9, translated >= 0.5 of the chat figure."""
    chat = results.get("tokenrelay")
    direct = results.get("direct")
    if chat is None or not any(t in results for t in RESPONSES):
        return []
    out = [
        "",
        "## d. Responses clients beside the chat passthrough (same run)",
        "",
        "| path | added TTFT p50 c=1 ms | chunks per gateway CPU s | ratio to chat passthrough |",
        "|---|---:|---:|---:|",
    ]
    base = chat["tp"]["chunks_per_cpu_s"]
    for t, label in (
        ("tokenrelay", "chat client, OpenAI chat upstream (passthrough)"),
        ("tokenrelay-responses", "Responses client, OpenAI chat upstream (translated)"),
        ("tokenrelay-responses-pass", "Responses client, Responses upstream (passthrough)"),
    ):
        if t not in results:
            continue
        r = results[t]
        ttft = r["ttft_c1"]["ttft_ms"]["50"]
        added = ttft - direct["ttft_c1"]["ttft_ms"]["50"] if direct is not None else None
        per = r["tp"]["chunks_per_cpu_s"]
        out.append(
            f"| {label} | {_f(added, 2, True)} | {_f(per, 0)} | {_f(per / base if base else None, 2)} |"
        )
    return out
