"""The soak's report: each round judged against an uninterrupted answer (text, sequence
numbers, ``[DONE]``, stalls, TTFT), the memory verdicts, and the markdown page.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from typing import Any

from harness import Noise
from loadgen import percentile
from soak_client import STALL_MS, Flow, Opts


def judge(flows: list[Flow], o: Opts) -> dict[str, Any]:
    expected = "".join(f"tok{i} " for i in range(o.chunks))
    events = o.chunks + 3
    errors: Counter[str] = Counter()
    inexact: list[dict[str, Any]] = []
    gaps: list[float] = []
    ttft: list[float] = []
    reattach: list[float] = []
    stream_s: list[float] = []
    stall_limit = o.gap * 1000 + STALL_MS
    stalls = 0
    streams_stalled = 0
    exact = exact_resumed = resumed = 0
    seq_problems = 0  # streams with a sequence gap, a duplicate or a foreign id
    drops = resumes = 0
    buffer_bytes = 0
    for f in flows:
        drops += f.drops
        resumes += f.resumes
        buffer_bytes += f.event_bytes
        for e in f.errors:
            errors[re.sub(r"st_[\w-]+", "st_…", e)[:160]] += 1
        if f.error_frames:
            errors["error frame in stream"] += 1
        text = "".join(f.parts)
        problems = list(f.violations)
        seq_problems += bool(f.violations)
        if text != expected:
            i = next(
                (k for k, (a, b) in enumerate(zip(text, expected, strict=False)) if a != b), None
            )
            i = min(len(text), len(expected)) if i is None else i
            problems.append(
                f"text differs at char {i}: got {text[max(0, i - 12) : i + 24]!r}, "
                f"want {expected[max(0, i - 12) : i + 24]!r} ({len(text)} vs {len(expected)} chars)"
            )
        if f.done != 1:
            problems.append(f"[DONE] seen {f.done} times")
        if f.finish != ["stop"]:
            problems.append(f"finish_reason {f.finish}")
        if not f.direct and f.last_seq != events:
            problems.append(f"last seq {f.last_seq}, want {events}")
        ok = not problems and not f.errors
        exact += ok
        if f.resumes:
            resumed += 1
            exact_resumed += ok
        if not ok and len(inexact) < 20:
            inexact.append(
                {
                    "flow": f.index,
                    "stream": (f.stream_id or f.header_id or b"?").decode(),
                    "drops": f.drops,
                    "resumes": f.resumes,
                    "errors": f.errors,
                    "problems": problems[:6],
                    "error_frames": [x.decode("utf-8", "replace") for x in f.error_frames[:2]],
                    "request_id": f.request_id,
                    "attachments": f.trace,
                }
            )
        n_stall = sum(1 for g in f.gaps_ms if g > stall_limit)
        stalls += n_stall
        streams_stalled += n_stall > 0
        gaps.extend(f.gaps_ms)
        if f.ttft_ms is not None:
            ttft.append(f.ttft_ms)
        reattach.extend(f.reattach_ms)
        if not f.resumes and not f.errors and f.end_ns and f.request_ns:
            stream_s.append((f.end_ns - f.request_ns) / 1e9)
    gaps.sort()
    ttft.sort()
    reattach.sort()
    stream_s.sort()
    return {
        "streams": len(flows),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common(8)),
        "streams_dropping": sum(1 for f in flows if f.drops),
        "drops": drops,
        "resumes": resumes,
        "resumed_streams": resumed,
        "exact": exact,
        "exact_resumed": exact_resumed,
        "seq_problems": seq_problems,
        "inexact_examples": inexact,
        "gaps": len(gaps),
        "stalls": stalls,
        "stall_limit_ms": stall_limit,
        "streams_stalled": streams_stalled,
        "gap_ms": {"50": percentile(gaps, 50), "99": percentile(gaps, 99), "max": gaps[-1]}
        if gaps
        else {},
        "ttft_ms": {"50": percentile(ttft, 50), "99": percentile(ttft, 99), "n": len(ttft)},
        "reattach_ms": {
            "50": percentile(reattach, 50),
            "99": percentile(reattach, 99),
            "n": len(reattach),
        },
        "stream_s": {"50": percentile(stream_s, 50), "99": percentile(stream_s, 99)},
        "frames": sum(f.events for f in flows),
        "hub_buffer_mb": buffer_bytes / (1024 * 1024),
    }


def noise_dict(noise: Noise) -> dict[str, float]:
    return {"foreign_s": noise.foreign_s, "steal_s": noise.steal_s, "wall_s": noise.wall_s}


def f2(x: Any, d: int = 1) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "n/a"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:,.{d}f}"


def live_mb(d: dict[str, Any]) -> float | None:
    """Memory held by live allocations: pymalloc's used blocks + glibc's in-use heap and
    mmapped blocks (what a leak would grow; free memory the allocators keep is not in it)."""
    try:
        return float(
            d["pymalloc"]["allocated_mb"] + d["malloc"]["uordblks"] + d["malloc"]["hblkhd"]
        )
    except (KeyError, TypeError):
        return None


def verdict(out: dict[str, Any], o: Opts) -> list[str]:
    """A: RSS back within 15 % of the baseline plus the frames the hub still legitimately
    keeps; B: nothing grows from round to round once round 1 has filled pools and arenas."""
    base = out["baseline_rss_mb"]
    rounds = out["rounds"]
    lines = ["A. RSS after <= 1.15 x baseline + frame bytes the hub still keeps:"]
    points = [
        (f"round {i} after", r["swept_rss_mb"], r.get("diag_swept") or {})
        for i, r in enumerate(rounds, 1)
    ]
    if "final_idle_rss_mb" in out:
        d = out["diag"].get(f"idle+{out['final_idle']:g}s") or {}
        points.append((f"{out['final_idle']:g} s later", out["final_idle_rss_mb"], d))
    for name, rss, d in points:
        kept = (d.get("hub") or {}).get("total_bytes", 0) / 2**20
        limit = base * 1.15 + kept
        ok = rss <= limit
        lines.append(
            f"- {name}: {rss:.1f} MB vs {limit:.1f} MB ({base:.1f} x 1.15 + {kept:.1f} kept): "
            + ("**within**" if ok else "**above**")
        )
    if len(rounds) >= 3:
        a, b = rounds[1], rounds[-1]
        grow = b["swept_rss_mb"] - a["swept_rss_mb"]
        lines.append(
            f"B. Growth from round 2 to round {len(rounds)} (after each; criterion: at most 5 % "
            f"of baseline, {0.05 * base:.1f} MB):"
        )
        lines.append(
            f"- RSS {grow:+.1f} MB: " + ("**no growth**" if grow <= 0.05 * base else "**grows**")
        )
        la, lb = live_mb(a.get("diag_swept") or {}), live_mb(b.get("diag_swept") or {})
        if la is not None and lb is not None:
            lines.append(
                f"- live allocations (pymalloc used blocks + glibc in use) {la:.1f} -> {lb:.1f} "
                f"MB, {lb - la:+.1f} MB: "
                + ("**no growth**" if lb - la <= 0.05 * base else "**grows**")
            )
    return ["", *lines]


def diag_table(out: dict[str, Any]) -> list[str]:
    """The gateway's own dumps (LAUNCHER), one column per moment."""
    d = {k: v for k, v in out.get("diag", {}).items() if v}
    if not d:
        return []
    names = list(d)

    def cells(fn: Any) -> str:
        vals = []
        for k in names:
            try:
                vals.append(fn(d[k]))
            except (KeyError, TypeError):
                vals.append("n/a")
        return " | ".join(vals)

    rows = [
        ("RSS, MB", lambda x: f"{x['rss_mb']:.1f}"),
        (
            "hub: streams live / finished kept / of those past retention",
            lambda x: (
                f"{x['hub']['live']} / {x['hub']['finished']} / "
                f"{x['hub']['finished_past_retention']}"
            ),
        ),
        ("hub: frame bytes kept, MB", lambda x: f"{x['hub']['total_bytes'] / 2**20:.1f}"),
        ("hub: evicted ids remembered (for 410s)", lambda x: f"{x['hub']['evicted_ids']:,}"),
        ("`Stream` objects alive", lambda x: f"{x['stream_objects']:,}"),
        ("upstream connections (pooled `_Conn` objects)", lambda x: f"{x['upstream_conns']:,}"),
        ("open file descriptors", lambda x: f"{x['fds']:,}"),
        ("objects tracked by gc", lambda x: f"{x['gc_objects']:,}"),
        ("Python allocated blocks", lambda x: f"{x['allocated_blocks']:,}"),
        ("pymalloc arenas (1 MiB each)", lambda x: f"{x['pymalloc']['arenas']}"),
        (
            "pymalloc: in used blocks / free blocks in used pools / empty pools, MB",
            lambda x: (
                f"{x['pymalloc']['allocated_mb']:.1f} / {x['pymalloc']['available_mb']:.1f}"
                f" / {x['pymalloc']['unused_pools_mb']:.1f}"
            ),
        ),
        ("glibc heap in use, MB (uordblks)", lambda x: f"{x['malloc']['uordblks']:.1f}"),
        ("glibc heap free but kept, MB (fordblks)", lambda x: f"{x['malloc']['fordblks']:.1f}"),
        ("glibc mmapped, MB (hblkhd)", lambda x: f"{x['malloc']['hblkhd']:.1f}"),
    ]
    lines = [
        "",
        "### What the gateway holds (its own dump on SIGUSR1, taken while idle)",
        "",
        "end-gc = after `gc.collect()`; end-trim = then glibc `malloc_trim(0)`.",
        "",
        "| figure | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    lines += [f"| {name} | {cells(fn)} |" for name, fn in rows]
    return lines


def render(out: dict[str, Any], o: Opts, args: argparse.Namespace, info: list[str]) -> str:
    rounds = out["rounds"]
    d = out.get("direct")
    cols = (["direct (no gateway, no drops)"] if d else []) + [
        f"round {i}" for i in range(1, len(rounds) + 1)
    ]
    allr = ([d] if d else []) + rounds
    lines = [
        f"# Soak: {o.streams:,} streams with drops and resumes",
        "",
        *info,
        "",
        f"Each round: {o.streams:,} streams of `fake/gen/{o.chunks}?gap={o.gap:g}` "
        f"({o.chunks} text chunks {o.gap * 1000:g} ms apart, {o.chunks + 3} numbered events), "
        f"started uniformly over {o.ramp:g} s, each on its own connection. "
        f"{o.share:.0%} of the clients drop (close or abort the socket after a random "
        f"event; again after a re-attach with probability 0.3, at most {o.max_drops} "
        "drops), pause 0-2 s and re-attach with `GET /v1/streams/{id}` + `Last-Event-ID`. "
        f"Stall = a gap over {o.gap * 1000 + STALL_MS:g} ms between two data frames on one "
        "connection (gaps while detached are not counted). Exact = the assembled text is "
        f"`tok0 … tok{o.chunks - 1} `, sequence numbers 1..{o.chunks + 3} each once in "
        "order, one `[DONE]`, finish_reason `stop`, no error.",
        "",
        "| figure | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]

    def row(name: str, fn: Any) -> None:
        vals = []
        for r in allr:
            try:
                vals.append(fn(r))
            except (KeyError, TypeError, ZeroDivisionError):
                vals.append("n/a")
        lines.append(f"| {name} | " + " | ".join(vals) + " |")

    row("streams / peak attached at once", lambda r: f"{r['streams']:,} / {r['peak_attached']:,}")
    row("errors", lambda r: f2(r["errors"]))
    row(
        "streams that dropped / drops / resumes done",
        lambda r: f"{r['streams_dropping']} / {r['drops']} / {r['resumes']}",
    )
    row("exact streams (all)", lambda r: f"{r['exact']:,} / {r['streams']:,}")
    row("exact resumed streams", lambda r: f"{r['exact_resumed']} / {r['resumed_streams']}")
    row("streams with a sequence gap, duplicate or foreign id", lambda r: f2(r["seq_problems"]))
    row(
        "stalls / gaps measured",
        lambda r: f"{r['stalls']:,} / {r['gaps']:,}",
    )
    row("streams with a stall", lambda r: f2(r["streams_stalled"]))
    row(
        "gap p50 / p99 / max, ms",
        lambda r: f"{r['gap_ms']['50']:.1f} / {r['gap_ms']['99']:.1f} / {r['gap_ms']['max']:.1f}",
    )
    row("TTFT p50 / p99, ms", lambda r: f"{r['ttft_ms']['50']:.1f} / {r['ttft_ms']['99']:.1f}")
    row(
        "re-attach to first frame p50 / p99, ms",
        lambda r: (
            f"{r['reattach_ms']['50']:.1f} / {r['reattach_ms']['99']:.1f}"
            if r["reattach_ms"]["n"]
            else "-"
        ),
    )
    row(
        "stream time p50 / p99 (not dropped), s",
        lambda r: f"{r['stream_s']['50']:.2f} / {r['stream_s']['99']:.2f}",
    )
    row("round wall time, s", lambda r: f"{r['wall_s']:.1f}")
    row("gateway CPU s", lambda r: f"{r['gateway_cpu_s']:.2f}")
    row(
        "gateway CPU use: busiest 1 s / seconds at >= 95 % of a core",
        lambda r: f"{r['gateway_busy']['peak_1s']:.0%} / {r['gateway_busy']['s_at_95']:.1f}",
    )
    row("gateway CPU µs per event produced", lambda r: f"{r['gateway_us_per_event']:.1f}")
    row(
        "gateway CPU µs per frame delivered", lambda r: f"{r['gateway_us_per_frame_delivered']:.1f}"
    )
    row(
        "waiting for a CPU (runnable, not running) s: gateway / fake / client",
        lambda r: (
            f"{r['cpu_wait_s']['gateway']:.2f} / {r['cpu_wait_s']['fake']:.2f} / "
            f"{r['cpu_wait_s']['client']:.2f}"
        ),
    )
    row("fake upstream CPU s", lambda r: f"{r['fake_cpu_s']:.2f}")
    row("client (this process) CPU s", lambda r: f"{r['client_cpu_s']:.2f}")
    row(
        "client event-loop lag p99 / max, ms",
        lambda r: f"{r['client_lag_ms']['99']:.1f} / {r['client_lag_ms']['max']:.1f}",
    )
    row(
        "other load: foreign CPU s / steal s / wall s",
        lambda r: (
            f"{r['noise']['foreign_s']:.1f} / {r['noise']['steal_s']:.1f} / "
            f"{r['noise']['wall_s']:.0f}"
        ),
    )
    lines += [
        "",
        f"### Gateway memory (RSS of the `tokenrelay serve` process, MB; "
        f"`streams.retention` = {args.retention:g} s)",
        "",
        f"Baseline = idle after a warm-up of 100 streams with drops and resumes, "
        f"{args.retention + 1:g} s of quiet and one request (median of 10 samples): "
        f"**{out['baseline_rss_mb']:.1f} MB**.",
        "",
        "| figure | " + " | ".join(f"round {i}" for i in range(1, len(rounds) + 1)) + " |",
        "|---|" + "---:|" * len(rounds),
    ]
    for name, key in [
        ("peak during the round", "peak_rss_mb"),
        ("when the last stream ended", "end_rss_mb"),
        (f"idle {args.settle:g} s later (no request)", "idle_rss_mb"),
        ("then 1 s after one request (evicts streams past retention)", "swept_rss_mb"),
        ("frames of the round's streams as sent (uncompressed), MB", "hub_buffer_mb"),
    ]:
        lines.append(f"| {name} | " + " | ".join(f"{r[key]:.1f}" for r in rounds) + " |")
    if "final_idle_rss_mb" in out:
        lines += [
            "",
            f"After the last round and {out['final_idle']:g} s more idle"
            + (" (past the upstream pool's 30 s idle timeout)" if out["final_idle"] > 30 else "")
            + ", then one request: "
            f"**{out['final_idle_rss_mb']:.1f} MB**"
            + (
                f"; after `gc.collect()` and `malloc_trim(0)`: {out['trimmed_rss_mb']:.1f} MB."
                if "trimmed_rss_mb" in out
                else "."
            ),
        ]
    lines += [
        "",
        "**No leak if** (both measured after the round's streams ended, 10 s idle and "
        "one request, which makes the hub evict streams past retention):",
        *verdict(out, o),
    ]
    lines += diag_table(out)
    lines += ["", "### Gateway's own account (access log and /metrics)", ""]
    for i, r in enumerate(rounds, 1):
        lg = r.get("log", {})
        m = r.get("metrics", {})
        lines.append(
            f"- round {i}: access-log outcomes {lg.get('outcomes')} (includes the probe "
            f"request), resumes counted in those lines {lg.get('resumes_logged')}; "
            f"/metrics (cumulative since start, warm-up included): resumed "
            f"{m.get('stream_events_resumed', 0):.0f}, detached "
            f"{m.get('streams_detached_total', 0):.0f}, cancelled "
            f"{m.get('stream_events_cancelled', 0):.0f}; log warnings/errors: "
            f"{len(lg.get('problems', []))}"
        )
    problems = [(i, r) for i, r in enumerate(allr) if r["errors"] or r["inexact_examples"]]
    if problems:
        lines += ["", "### Problems seen", ""]
        for i, r in problems:
            name = cols[i]
            lines.append(f"- {name}: errors {r['error_kinds']}")
            for ex in r["inexact_examples"][:5]:
                lines.append(f"  - `{json.dumps(ex, ensure_ascii=False)[:2500]}`")
    for i, r in enumerate(rounds, 1):
        for p in r.get("log", {}).get("problems", [])[:5]:
            lines.append(f"- round {i} log: `{p}`")
    return "\n".join(lines) + "\n"
