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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import random
import re
import resource
import signal
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from harness import (
    BENCH,
    LOOPBACK,
    PAGE,
    VENV_BIN,
    Noise,
    Server,
    cpu_model,
    cpu_plan,
    descendants,
    fake_server,
    free_port,
    install_signal_handlers,
    probe_stream,
    raise_nofile,
    repo_commit,
    stop_all,
    tree_cpu_seconds,
    version,
    wait_ready,
    write_gateway_config,
)
from loadgen import Conn, Rec, percentile

perf_ns = time.perf_counter_ns


class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    """The fields of an OpenAI chunk the checks need (the rest is skipped unparsed)."""

    choices: list[_Choice] | None = None
    error: Any = None


decode = msgspec.json.Decoder(_Chunk).decode
STALL_MS = 50.0  # a gap counts as a stall when it exceeds the upstream's gap by this much


# -- the client -------------------------------------------------------------------------


@dataclass
class Flow:
    """One stream as its client sees it, across every attachment (POST, then GETs)."""

    index: int
    start_at: float  # seconds after the round's start
    drop_plan: list[int]  # drop after receiving the event with this sequence number
    pauses: list[float]  # seconds to wait before each re-attach
    aborts: list[bool]  # per drop: abort() (RST) instead of close() (FIN)
    direct: bool = False  # against the fake upstream: no ids, no drops
    stream_id: bytes | None = None
    header_id: bytes | None = None
    last_seq: int = 0
    parts: list[str] = field(default_factory=list)
    finish: list[str] = field(default_factory=list)
    done: int = 0
    error_frames: list[bytes] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    attachments: int = 0
    drops: int = 0
    resumes: int = 0
    ttft_ms: float | None = None
    reattach_ms: list[float] = field(default_factory=list)
    gaps_ms: list[float] = field(default_factory=list)
    events: int = 0
    event_bytes: int = 0  # bytes of the numbered events received once each (hub buffer)
    request_ns: int = 0
    end_ns: int = 0
    request_id: str | None = None  # the POST's X-Request-Id (names the access-log line)
    # per attachment: wall clock of the request, ms to first frame and to the end, outcome,
    # last sequence number before and after
    trace: list[dict[str, Any]] = field(default_factory=list)


class Attach(Conn):
    """One attachment of a flow: loadgen's HTTP/1.1 decoding, SSE parsed here with its
    ``id:`` field; closes the socket itself at the flow's next drop point."""

    def __init__(self, flow: Flow, first: bool) -> None:
        super().__init__()
        self.flow = flow
        self.first = first  # the POST (else a re-attach)
        self.fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.ended = False
        self._head: bytearray | None = bytearray()
        self._errbody = b""
        self._last_t = 0
        self.first_t = 0
        self.start_ns = 0

    # -- the response head: loadgen keeps no headers, the stream id is wanted here --------
    def data_received(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            head += data
            i = head.find(b"\r\n\r\n")
            if i >= 0:
                for line in bytes(head[:i]).split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if self.first and name.strip().lower() == b"x-request-id":
                        self.flow.request_id = value.strip().decode("latin-1")
                    if name.strip().lower() == b"x-stream-id":
                        sid = value.strip()
                        flow = self.flow
                        if flow.header_id is None:
                            flow.header_id = sid
                        elif sid != flow.header_id:
                            flow.violations.append(f"X-Stream-Id {sid!r} != {flow.header_id!r}")
                self._head = None
            elif len(head) > 65536:
                self._head = None
        super().data_received(data)

    # -- loadgen's hooks ----------------------------------------------------------------
    def _finish(self) -> None:
        self._end("end")

    def _fail(self, msg: str) -> None:
        self._end("error: " + msg)

    def _end(self, why: str) -> None:
        if not self.ended:
            self.ended = True
            self._rec = None
            if not self.fut.done():
                self.fut.set_result(why)
        if self.transport is not None:
            self.transport.close()

    def _frames(self, piece: bytes, now: int) -> None:
        if self.ended:
            return
        rec = self._rec
        if rec is not None and rec.status != 200:
            self._errbody = (self._errbody + piece)[:400]
            return
        if b"\r" in piece:
            piece = piece.replace(b"\r\n", b"\n")
        sse = self._sse
        sse += piece
        start = 0
        while not self.ended:
            i = sse.find(b"\n\n", start)
            if i < 0:
                break
            frame = bytes(sse[start:i])
            start = i + 2
            self._event(frame, now)
        if start:
            del sse[:start]

    def _event(self, frame: bytes, now: int) -> None:
        eid: bytes | None = None
        data: bytes | None = None
        nl = frame.find(b"\n")
        if frame.startswith(b"id: ") and frame.startswith(b"data: ", nl + 1):
            eid = frame[4:nl]  # the gateway's shape: "id: X\ndata: Y"
            data = frame[nl + 7 :]
            lines = [] if b"\n" not in data else frame.split(b"\n")
            if lines:
                eid = data = None
        else:
            lines = frame.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                v = line[5:]
                v = v[1:] if v[:1] == b" " else v
                data = v if data is None else data + b"\n" + v
            elif line.startswith(b"id:"):
                v = line[3:]
                eid = v[1:] if v[:1] == b" " else v
        flow = self.flow
        seq = -1
        if not flow.direct:
            if eid is not None:
                sid, _, seq_b = eid.rpartition(b":")
                if flow.stream_id is None:
                    flow.stream_id = sid
                    if flow.header_id is not None and sid != flow.header_id:
                        flow.violations.append(f"id {sid!r} != X-Stream-Id {flow.header_id!r}")
                elif sid != flow.stream_id:
                    flow.violations.append(f"id of another stream: {eid!r}")
                seq = int(seq_b) if seq_b.isdigit() else -1
                if seq != flow.last_seq + 1:
                    kind = "duplicate" if 0 <= seq <= flow.last_seq else "gap"
                    flow.violations.append(
                        f"{kind}: attachment {flow.attachments} got seq {seq} after {flow.last_seq}"
                    )
                if seq > flow.last_seq:
                    flow.event_bytes += len(frame) + 2
                flow.last_seq = seq
            elif data is not None:
                flow.violations.append(f"frame without id: {frame[:120]!r}")
        if data is None:
            return  # a comment (": ping") or "retry:"
        flow.events += 1
        if data == b"[DONE]":
            flow.done += 1
        else:
            last = self._last_t
            if not self.first_t:
                self.first_t = now
            if last:
                flow.gaps_ms.append((now - last) / 1e6)
            elif self.first:
                flow.ttft_ms = (now - self.start_ns) / 1e6
            else:
                flow.reattach_ms.append((now - self.start_ns) / 1e6)
            self._last_t = now
            try:
                chunk = decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                flow.violations.append(f"data not a chunk: {data[:120]!r}")
                chunk = _Chunk()
            if chunk.error is not None:
                flow.error_frames.append(data[:300])
            for choice in chunk.choices or ():
                if choice.delta is not None and choice.delta.content:
                    flow.parts.append(choice.delta.content)
                if choice.finish_reason:
                    flow.finish.append(choice.finish_reason)
        if flow.drop_plan and seq == flow.drop_plan[0]:
            self._drop()

    def _drop(self) -> None:
        flow = self.flow
        flow.drop_plan.pop(0)
        abort = flow.aborts[flow.drops] if flow.drops < len(flow.aborts) else False
        flow.drops += 1
        self.ended = True
        self._rec = None
        if not self.fut.done():
            self.fut.set_result("dropped")
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()


def post_request(port: int, model: str) -> bytes:
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Say something."}],
            "stream": True,
        },
        separators=(",", ":"),
    ).encode()
    head = [
        "POST /v1/chat/completions HTTP/1.1",
        f"Host: {LOOPBACK}:{port}",
        "User-Agent: tokenrelay-bench-soak",
        "Accept: text/event-stream",
        "Content-Type: application/json",
        "Authorization: Bearer sk-bench",
        "X-Tokenrelay-Resume: 1",  # these clients resume: ids and the grace
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def resume_request(port: int, stream_id: bytes, last_seq: int) -> bytes:
    sid = stream_id.decode()
    head = [
        f"GET /v1/streams/{sid} HTTP/1.1",
        f"Host: {LOOPBACK}:{port}",
        "User-Agent: tokenrelay-bench-soak",
        "Accept: text/event-stream",
        "Authorization: Bearer sk-bench",
        f"Last-Event-ID: {sid}:{last_seq}",
        "Connection: close",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


class Load:
    """Counts attached connections (now and peak) across flows."""

    def __init__(self) -> None:
        self.attached = 0
        self.peak = 0


async def attach(
    flow: Flow, port: int, request: bytes, first: bool, timeout: float, load: Load
) -> str:
    loop = asyncio.get_running_loop()
    flow.attachments += 1
    try:
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: Attach(flow, first), LOOPBACK, port), timeout
        )
    except (OSError, TimeoutError) as e:
        return f"error: connect: {type(e).__name__}: {e}"
    load.attached += 1
    load.peak = max(load.peak, load.attached)
    seq0 = flow.last_seq
    wall = time.time()
    why = "error: not run"
    try:
        rec = Rec()
        conn._rec = rec
        conn.start_ns = rec.start = perf_ns()
        if first:
            flow.request_ns = conn.start_ns
        assert conn.transport is not None
        conn.transport.write(request)
        try:
            why = await asyncio.wait_for(asyncio.shield(conn.fut), timeout)
        except TimeoutError:
            conn._end(f"error: timeout after {timeout:g}s")
            why = conn.fut.result()
        if why != "dropped" and rec.status not in (0, 200):
            why = f"error: HTTP {rec.status} {conn._errbody[:200]!r}"
        return why
    finally:
        end = perf_ns()
        flow.trace.append(
            {
                "at": dt.datetime.fromtimestamp(wall).strftime("%H:%M:%S.%f")[:-3],
                "first_ms": round((conn.first_t - conn.start_ns) / 1e6, 1)
                if conn.first_t
                else None,
                "end_ms": round((end - conn.start_ns) / 1e6, 1),
                "outcome": why[:40],
                "seq": [seq0, flow.last_seq],
            }
        )
        load.attached -= 1
        if conn.transport is not None:
            conn.transport.close()


async def run_flow(
    flow: Flow, port: int, model: str, t0: float, timeout: float, load: Load, max_att: int
) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, t0 + flow.start_at - loop.time()))
    why = await attach(flow, port, post_request(port, model), True, timeout, load)
    pause = 0
    while why == "dropped" and flow.attachments < max_att:
        await asyncio.sleep(flow.pauses[pause] if pause < len(flow.pauses) else 0.0)
        pause += 1
        sid = flow.stream_id or flow.header_id
        if sid is None:
            why = "error: dropped before any stream id"
            break
        flow.resumes += 1
        req = resume_request(port, sid, flow.last_seq)
        why = await attach(flow, port, req, False, timeout, load)
    if why.startswith("error"):
        flow.errors.append(why)
    elif why == "dropped":
        flow.errors.append("too many attachments")
    flow.end_ns = perf_ns()


def plan_flows(
    n: int, events: int, ramp: float, share: float, rng: random.Random, direct: bool, max_drops: int
) -> list[Flow]:
    """``events``: numbered events of one stream, [DONE] included; a drop follows any of
    them but the last, so a re-attach has something left to read."""
    flows = []
    dropping = set(rng.sample(range(n), round(n * share))) if not direct else set()
    for i in range(n):
        drops = 0
        if i in dropping:
            drops = 1
            while drops < max_drops and rng.random() < 0.3:
                drops += 1
        points = sorted(rng.sample(range(1, events), min(drops, events - 1)))
        flows.append(
            Flow(
                index=i,
                start_at=rng.uniform(0.0, ramp),
                drop_plan=points,
                pauses=[rng.uniform(0.0, 2.0) for _ in points],
                aborts=[rng.random() < 0.5 for _ in points],
                direct=direct,
            )
        )
    return flows


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


# -- measuring the gateway --------------------------------------------------------------


class Sampler:
    """RSS and CPU time of the gateway's processes every ``interval`` s, as an asyncio
    task (small /proc reads per sample)."""

    def __init__(self, pids: list[int], interval: float = 0.1) -> None:
        self.pids = pids
        self.interval = interval
        self.t0 = time.monotonic()
        self.timeline: list[tuple[float, float]] = []
        self.cpu: list[tuple[float, float]] = []  # (monotonic, CPU seconds)
        self._task: asyncio.Task[None] | None = None

    def cpu_s(self) -> float:
        total = 0
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    raw = f.read()
                st = raw[raw.rindex(b")") + 2 :].split()
                total += int(st[11]) + int(st[12])
            except (OSError, IndexError, ValueError):
                continue
        return total / os.sysconf("SC_CLK_TCK")

    def busy(self, t0: float, t1: float) -> dict[str, float]:
        """Between monotonic t0 and t1: the highest CPU use over any 1 s (1.0 = one whole
        core), and the seconds during which the trailing 0.5 s used 95 % of a core or more
        (/proc ticks are 10 ms, so shorter windows are too coarse)."""
        pts = [(t, c) for (t, c) in self.cpu if t0 <= t <= t1]

        def rate(i: int, window: float) -> float | None:
            j = i
            while j > 0 and pts[i][0] - pts[j][0] < window:
                j -= 1
            dt_ = pts[i][0] - pts[j][0]
            return (pts[i][1] - pts[j][1]) / dt_ if dt_ >= window * 0.9 else None

        peak = 0.0
        full = 0.0
        for i in range(1, len(pts)):
            r1 = rate(i, 1.0)
            if r1 is not None:
                peak = max(peak, r1)
            r = rate(i, 0.5)
            if r is not None and r >= 0.95:
                full += pts[i][0] - pts[i - 1][0]
        return {"peak_1s": peak, "s_at_95": full}

    def rss_mb(self) -> float:
        total = 0
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/statm", "rb") as f:
                    total += int(f.read().split()[1]) * PAGE
            except (OSError, IndexError, ValueError):
                continue
        return total / (1024 * 1024)

    def sample(self) -> float:
        mb = self.rss_mb()
        now = time.monotonic()
        self.timeline.append((round(now - self.t0, 2), round(mb, 2)))
        self.cpu.append((now, self.cpu_s()))
        return mb

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def peak_since(self, t: float) -> float:
        vals = [mb for (s, mb) in self.timeline if s >= t - self.t0]
        return max(vals) if vals else float("nan")


def sched_wait_s(root: int) -> float:
    """Seconds the threads of ``root``'s process tree spent runnable but waiting for a
    CPU (/proc/<pid>/task/<tid>/schedstat, second field; live threads only)."""
    total = 0
    for pid in descendants(root):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with (
                    contextlib.suppress(OSError, IndexError, ValueError),
                    open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f,
                ):
                    total += int(f.read().split()[1])
    return total / 1e9


def log_lines(path: Path, ids: list[str]) -> dict[str, str]:
    """The access-log line of each request id (written when its stream ended)."""
    want = set(ids)
    found: dict[str, str] = {}
    with contextlib.suppress(OSError), open(path, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", "replace").rstrip()
            for rid in want:
                if rid in line:
                    found[rid] = line[:400]
    return found


def scrape_metrics(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("tokenrelay_stream_events_total"):
            ev = re.search(r'event="(\w+)"', line)
            out[f"stream_events_{ev.group(1) if ev else '?'}"] = float(line.split()[-1])
        elif line.startswith("tokenrelay_streams_detached_total"):
            out["streams_detached_total"] = float(line.split()[-1])
        elif line.startswith(("tokenrelay_streams_active ", "tokenrelay_streams_detached ")):
            out[line.split()[0]] = float(line.split()[-1])
        elif line.startswith("tokenrelay_requests_total"):
            oc = re.search(r'outcome="(\w+)"', line)
            key = f"requests_{oc.group(1) if oc else '?'}"
            out[key] = out.get(key, 0.0) + float(line.split()[-1])
    return out


def log_summary(path: Path, offset: int) -> dict[str, Any]:
    """Outcomes of the access lines, and warning/error lines, after ``offset``."""
    with open(path, "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    outcomes: Counter[str] = Counter()
    resumes = 0
    problems: list[str] = []
    for line in text.splitlines():
        m = re.search(r" outcome=(\S+)", line)
        if m and "tokenrelay.access" in line:
            outcomes[m.group(1)] += 1
            r = re.search(r" resumes=(\d+)", line)
            resumes += int(r.group(1)) if r else 0
        elif re.search(r"WARNING|ERROR|CRITICAL|Traceback|Exception", line):
            problems.append(line[:300])
    return {"outcomes": dict(outcomes), "resumes_logged": resumes, "problems": problems[:20]}


# -- one round --------------------------------------------------------------------------


@dataclass
class Opts:
    streams: int
    gap: float
    chunks: int
    share: float
    ramp: float
    max_drops: int
    timeout: float
    deadline: float
    seed: int


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


async def loop_lag(out: list[float], period: float = 0.01) -> None:
    """How late this client's event loop wakes a 10 ms sleep (ms): when it is late, the
    client's own timestamps are late too, whatever the gateway does."""
    clock = time.perf_counter
    while True:
        t = clock()
        await asyncio.sleep(period)
        out.append((clock() - t - period) * 1000)


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


# -- the run ----------------------------------------------------------------------------


def gateway_config(fake_port: int, run_dir: Path, grace: float, retention: float) -> Path:
    extra = "env_providers: false\n"
    extra += f"streams: {{grace: {grace:g}, retention: {retention:g}}}\n"
    return write_gateway_config(run_dir, fake_port, extra)


async def one_request(port: int) -> str:
    """One tiny stream through the gateway (it also makes the hub sweep)."""
    flow = Flow(index=-1, start_at=0, drop_plan=[], pauses=[], aborts=[])
    why = await attach(flow, port, post_request(port, "fake/gen/1?ttft=0"), True, 10, Load())
    return why if flow.done == 1 else f"{why} (no [DONE])"


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


# -- report -----------------------------------------------------------------------------


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


def machine_info(
    args: argparse.Namespace, pinned: bool, load_before: float, started_at: dt.datetime
) -> list[str]:
    commit = repo_commit()
    return [
        f"- date: {started_at.strftime('%Y-%m-%d %H:%M UTC')} (start of the run)",
        f"- command: `{' '.join([Path(sys.executable).name, 'bench/soak.py', *sys.argv[1:]])}`",
        f"- machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}, Linux {platform.release()}",
        f"- python {platform.python_version()}; tokenrelay {version('tokenrelay')} at {commit}; "
        f"uvicorn {version('uvicorn')}, uvloop {version('uvloop')}, aiohttp {version('aiohttp')}",
        f"- gateway: one `tokenrelay serve` process, config `streams: {{grace: {args.grace:g}, "
        f"retention: {args.retention:g}}}`, default logging (one access line per stream)"
        + (f"; environment {' '.join(args.gateway_env)}" if args.gateway_env else ""),
        "- CPU placement: "
        + (
            "fake upstream and this client pinned to CPU 0, the gateway to CPU 1"
            if pinned
            else "not pinned"
        ),
        f"- 1-min load average before the run: {load_before:.2f}"
        + (" (**the machine was busy: figures are noisy**)" if load_before > 0.5 else ""),
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
