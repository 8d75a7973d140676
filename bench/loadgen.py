"""A cheap load generator for streaming chat completions (OpenAI wire format).

One process, one uvloop event loop, one ``asyncio.Protocol`` per connection. It speaks
just enough HTTP/1.1 (request line, Content-Length body, status line, chunked or
Content-Length or close-delimited response bodies, keep-alive) and just enough SSE
(find the blank line that ends a frame) to timestamp the arrival of every data frame.
No JSON is parsed on the hot path.

Each worker owns one keep-alive connection and runs requests one after another until
the shared request count is used up, so ``--concurrency 1 --requests 200`` is 200
sequential requests on one connection, and ``--concurrency 500 --requests 500`` is 500
simultaneous streams.

Timing of one stream: ``start`` is taken just before the request is written;
every ``data:`` frame (other than ``data: [DONE]``) is stamped with the time the read
that completed it was delivered to ``data_received``; TTFT = first frame - start.

Handshake mode (``--handshake``, used by run.py so that the target's CPU is read only
around the measured window): all connections are opened first, then the loadgen
prints ``READY`` and waits for a ``GO`` line on stdin; when every stream has finished
it prints ``END`` and waits for ``BYE`` before it closes its connections and prints
``RESULT {json}``. Without it, it runs at once and prints the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import functools
import json
import math
import resource
import sys
import time
from collections import Counter
from typing import Any, cast

perf_ns = time.perf_counter_ns

HEAD, BODY, TRAILER = 0, 1, 2
CHUNKED, LENGTH, UNTIL_CLOSE = 0, 1, 2


class Rec:
    """What one request produced."""

    __slots__ = ("done", "error", "error_frames", "first", "start", "status", "times")

    def __init__(self) -> None:
        self.start = 0
        self.first = 0
        self.times: list[int] = []
        self.status = 0
        self.error: str | None = None
        self.error_frames = 0
        self.done = False


class Conn(asyncio.Protocol):
    """One HTTP/1.1 connection that runs one request at a time."""

    def __init__(self, responses: bool = False) -> None:
        self.transport: asyncio.Transport | None = None
        self.responses = responses  # the Responses wire: tokens are output_text deltas
        self.closed = False
        self.reusable = True
        self._rec: Rec | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._buf = bytearray()
        self._sse = bytearray()
        self._state = HEAD
        self._mode = CHUNKED
        self._left = 0  # bytes left in the current chunk / the Content-Length body
        self._crlf = False  # a chunk's trailing CRLF is still to be skipped

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        rec = self._rec
        if rec is not None:
            if self._state == BODY and self._mode == UNTIL_CLOSE:
                self._finish()
            else:
                self._fail(f"connection lost ({exc or 'closed by peer'})")

    def data_received(self, data: bytes) -> None:
        now = perf_ns()
        rec = self._rec
        if rec is None:
            return  # nothing in flight: ignore stray bytes
        buf = self._buf
        buf += data
        if self._state == HEAD:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                if len(buf) > 65536:
                    self._fail("response head too large")
                return
            head = bytes(buf[:i]).decode("latin-1")
            del buf[: i + 4]
            lines = head.split("\r\n")
            try:
                rec.status = int(lines[0].split(" ", 2)[1])
            except (IndexError, ValueError):
                self._fail(f"bad status line {lines[0]!r}")
                return
            self._mode = UNTIL_CLOSE
            self.reusable = not lines[0].startswith("HTTP/1.0")
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                value = value.strip().lower()
                if name == "transfer-encoding" and "chunked" in value:
                    self._mode = CHUNKED
                elif name == "content-length" and self._mode != CHUNKED:
                    self._mode = LENGTH
                    self._left = int(value)
                elif name == "connection" and "close" in value:
                    self.reusable = False
            if self._mode == UNTIL_CLOSE:
                self.reusable = False
            self._state = BODY
            self._left = self._left if self._mode == LENGTH else 0
            self._crlf = False
            if self._mode == LENGTH and self._left == 0:
                self._finish()
                return
        if self._state == BODY:
            if self._mode == CHUNKED:
                self._chunked(now)
            elif self._mode == LENGTH:
                n = min(len(buf), self._left)
                self._frames(bytes(buf[:n]), now)
                del buf[:n]
                self._left -= n
                if self._left == 0:
                    self._finish()
            else:
                self._frames(bytes(buf), now)
                buf.clear()
        if self._state == TRAILER:
            # No trailers are expected; the body ends with an empty line.
            while True:
                j = buf.find(b"\r\n")
                if j < 0:
                    return
                trailer = buf[:j]
                del buf[: j + 2]
                if not trailer:
                    self._finish()
                    return

    # -- body decoding --------------------------------------------------------------
    def _chunked(self, now: int) -> None:
        buf = self._buf
        while True:
            if self._left:
                n = len(buf)
                if n == 0:
                    return
                if n <= self._left:
                    self._frames(bytes(buf), now)
                    self._left -= n
                    buf.clear()
                    if self._left:
                        return
                else:
                    self._frames(bytes(buf[: self._left]), now)
                    del buf[: self._left]
                    self._left = 0
                self._crlf = True
            if self._crlf:
                if len(buf) < 2:
                    return
                del buf[:2]
                self._crlf = False
            j = buf.find(b"\r\n")
            if j < 0:
                return
            try:
                size = int(bytes(buf[:j]).split(b";", 1)[0], 16)
            except ValueError:
                self._fail("bad chunk size")
                return
            del buf[: j + 2]
            if size == 0:
                self._state = TRAILER
                return
            self._left = size

    def _frames(self, piece: bytes, now: int) -> None:
        if b"\r" in piece:
            piece = piece.replace(b"\r\n", b"\n")
        sse = self._sse
        sse += piece
        start = 0
        rec = self._rec
        assert rec is not None
        times = rec.times
        while True:
            i = sse.find(b"\n\n", start)
            if i < 0:
                break
            frame = sse[start:i]
            start = i + 2
            if self.responses:
                self._responses_frame(frame, rec, now)
            elif frame.startswith(b"data:") or b"\ndata:" in frame:
                if frame.endswith(b"[DONE]"):
                    rec.done = True
                    continue
                if not times:
                    rec.first = now
                times.append(now)
                if b'{"error"' in frame:
                    rec.error_frames += 1
        if start:
            del sse[:start]

    @staticmethod
    def _responses_frame(frame: bytes, rec: Rec, now: int) -> None:
        """A Responses event: a text delta is a chunk (as a chat chunk is), the terminal
        event ends the stream as ``[DONE]`` does; the framing events count for neither."""
        if b"event: response.output_text.delta" in frame:
            if not rec.times:
                rec.first = now
            rec.times.append(now)
        elif b"event: response.completed" in frame:
            rec.done = True
        elif b"event: error" in frame or b"event: response.failed" in frame:
            rec.error_frames += 1

    # -- request lifecycle ----------------------------------------------------------
    def _finish(self) -> None:
        self._state = HEAD
        self._buf.clear()
        self._sse.clear()
        self._rec = None
        w = self._waiter
        self._waiter = None
        if w is not None and not w.done():
            w.set_result(None)
        if not self.reusable and self.transport is not None:
            self.transport.close()

    def _fail(self, msg: str) -> None:
        rec = self._rec
        if rec is not None and rec.error is None:
            rec.error = msg
        self._rec = None
        self.reusable = False
        w = self._waiter
        self._waiter = None
        if w is not None and not w.done():
            w.set_result(None)
        if self.transport is not None:
            self.transport.close()

    async def run(self, request: bytes, rec: Rec, timeout: float) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._rec = rec
        self._state = HEAD
        rec.start = perf_ns()
        self.transport.write(request)
        try:
            await asyncio.wait_for(asyncio.shield(self._waiter), timeout)
        except TimeoutError:
            self._fail(f"timeout after {timeout:g}s")


def history(body_bytes: int) -> list[dict[str, str]]:
    """An agent's context of about ``body_bytes`` bytes: turns of ~1 KB of text each
    (user and assistant alternating, text with quotes and newlines to escape), then the
    question."""
    turn = ('Read "src/app.py" line 40:\n    return x\\n  # tab\there. ' * 20)[:1000]
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": turn}
        for i in range(round(body_bytes / 1080))
    ]
    return [*turns, {"role": "user", "content": "Say something."}]


def build_request(
    host: str,
    port: int,
    path: str,
    model: str,
    api_key: str | None,
    store: bool = True,
    body_bytes: int = 0,
) -> bytes:
    messages = history(body_bytes)
    ask: dict[str, Any] = (
        {"input": messages if body_bytes else "Say something."}
        | ({} if store else {"store": False})
        if path.endswith("/responses")
        else {"messages": messages}
    )
    body = json.dumps(
        {"model": model, **ask, "stream": True},
        separators=(",", ":"),
    ).encode()
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "User-Agent: tokenrelay-bench-loadgen",
        "Accept: text/event-stream",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if api_key:
        # Written out here, not taken from tokenrelay.protocols.base.bearer: the load
        # generator imports nothing of tokenrelay, so its heap (and GC) stays as measured.
        head.append(f"Authorization: Bearer {api_key}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]


async def _connect(host: str, port: int, timeout: float, responses: bool = False) -> Conn:
    loop = asyncio.get_running_loop()
    factory = functools.partial(Conn, responses)
    _, proto = await asyncio.wait_for(loop.create_connection(factory, host, port), timeout)
    return proto


async def run_load(args: argparse.Namespace) -> dict[str, Any]:
    request = build_request(
        args.host,
        args.port,
        args.path,
        args.model,
        args.api_key,
        not args.no_store,
        args.body_bytes,
    )
    n = args.requests
    c = min(args.concurrency, n)
    recs: list[Rec] = []
    next_index = 0
    connect_errors: Counter[str] = Counter()
    go = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def open_conn() -> Conn | None:
        try:
            return await _connect(
                args.host, args.port, args.timeout, args.path.endswith("/responses")
            )
        except (OSError, TimeoutError) as e:
            connect_errors[f"connect: {type(e).__name__}: {e}"] += 1
            return None

    # Open every connection first so that connection setup is outside the window.
    conns: list[Conn | None] = list(await asyncio.gather(*(open_conn() for _ in range(c))))

    async def worker(i: int) -> None:
        nonlocal next_index
        await go.wait()
        conn = conns[i]
        while next_index < n:
            next_index += 1
            rec = Rec()
            recs.append(rec)
            if conn is None or conn.closed or not conn.reusable:
                if conn is not None and conn.transport is not None:
                    conn.transport.close()
                conn = await open_conn()
                conns[i] = conn
                if conn is None:
                    rec.error = "connect failed"
                    await asyncio.sleep(0.01)
                    continue
            try:
                await conn.run(request, rec, args.timeout)
            except Exception as e:  # a harness bug must show in the result, not hang it
                rec.error = f"loadgen: {type(e).__name__}: {e}"
                conn.reusable = False

    tasks = [loop.create_task(worker(i)) for i in range(c)]
    if args.handshake:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() != "GO":
            for t in tasks:
                t.cancel()
            raise SystemExit("loadgen: expected GO on stdin")
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = perf_ns()
    go.set()
    _done, pending = await asyncio.wait(tasks, timeout=args.deadline)
    for t in pending:
        t.cancel()
    t1 = perf_ns()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    if args.handshake:
        sys.stdout.write("END\n")
        sys.stdout.flush()
        await loop.run_in_executor(None, sys.stdin.readline)
    for conn in conns:
        if conn is not None and conn.transport is not None:
            conn.transport.close()
    await asyncio.sleep(0)
    return summarize(
        recs,
        n=n,
        wall_ns=t1 - t0,
        cpu_s=(ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
        connect_errors=connect_errors,
        deadline_hit=bool(pending),
        raw=args.raw,
        stall_ms=args.stall_ms,
    )


def summarize(
    recs: list[Rec],
    *,
    n: int,
    wall_ns: int,
    cpu_s: float,
    connect_errors: Counter[str],
    deadline_hit: bool,
    raw: bool,
    stall_ms: float = 100.0,
) -> dict[str, Any]:
    errors: Counter[str] = Counter(connect_errors)
    ttft: list[float] = []
    gaps: list[float] = []
    durations: list[float] = []
    frames = 0
    per_stream: list[int] = []
    ok = 0
    last_ns = 0
    for rec in recs:
        frames += len(rec.times)
        if rec.times:
            last_ns = max(last_ns, rec.times[-1])
        err = rec.error
        if err is None and rec.status != 200:
            err = f"HTTP {rec.status}"
        if err is None and rec.error_frames:
            err = "error frame in stream"
        if err is None and not rec.times:
            err = "no data frame"
        if err is None and not rec.done:
            err = "no [DONE]"
        if err is not None:
            errors[err] += 1
            continue
        ok += 1
        per_stream.append(len(rec.times))
        ttft.append((rec.first - rec.start) / 1e6)
        t = rec.times
        durations.append((t[-1] - rec.start) / 1e6)
        gaps.extend((t[k] - t[k - 1]) / 1e6 for k in range(1, len(t)))
    not_run = n - len(recs)
    if not_run > 0:
        errors["not run (deadline)"] += not_run
    ttft.sort()
    gaps.sort()
    durations.sort()
    starts = [r.start for r in recs if r.start]
    window_s = (last_ns - min(starts)) / 1e9 if starts and last_ns else wall_ns / 1e9
    out: dict[str, Any] = {
        "requests": n,
        "ok": ok,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common(5)),
        "deadline_hit": deadline_hit,
        "frames": frames,
        "frames_per_stream": [min(per_stream), max(per_stream)] if per_stream else [0, 0],
        "window_s": window_s,
        "wall_s": wall_ns / 1e9,
        "frames_per_s": frames / window_s if window_s > 0 else 0.0,
        "loadgen_cpu_s": cpu_s,
        "ttft_ms": {q: percentile(ttft, q) for q in (50, 90, 99)} | {"n": len(ttft)},
        "gap_ms": {q: percentile(gaps, q) for q in (50, 99)}
        | {"max": gaps[-1] if gaps else float("nan"), "n": len(gaps)},
        "stream_ms": {q: percentile(durations, q) for q in (50, 99)},
        "stalls": len(gaps) - bisect.bisect_right(gaps, stall_ms),
        "stall_ms": stall_ms,
    }
    if raw:
        out["ttft_raw_ms"] = ttft
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/v1/chat/completions")
    p.add_argument("--model", required=True)
    p.add_argument("--api-key", default=None)
    p.add_argument("--no-store", action="store_true", help="Responses: send store: false")
    p.add_argument("--concurrency", "-c", type=int, default=1)
    p.add_argument("--requests", "-n", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    p.add_argument("--deadline", type=float, default=600.0, help="whole run, seconds")
    p.add_argument("--handshake", action="store_true", help="READY/GO/END/BYE on stdio")
    p.add_argument("--raw", action="store_true", help="include every TTFT in the output")
    p.add_argument("--body-bytes", type=int, default=0, help="pad the request to ~N bytes")
    p.add_argument(
        "--stall-ms", type=float, default=100.0, help="count gaps between frames over this"
    )
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("load may only target the loopback interface")
    if args.requests < 1 or args.concurrency < 1:
        p.error("--requests and --concurrency must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of uvicorn[standard]
        result = asyncio.run(run_load(args))
    else:
        result = uvloop.run(run_load(args))
    prefix = "RESULT " if args.handshake else ""
    sys.stdout.write(prefix + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
