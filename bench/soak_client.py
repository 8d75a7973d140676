"""The soak's client: one ``asyncio.Protocol`` per attachment of a stream (bench/loadgen.py's
HTTP/1.1 decoding), its SSE read by tokenrelay's own decoder (``tokenrelay.sse``) with
every ``id:`` checked (no gap, no duplicate, one stream), and the plan of which clients
drop when and re-attach with ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from harness import API_KEY, LOOPBACK
from loadgen import Conn, Rec

from tokenrelay.protocols.base import bearer as bearer_headers
from tokenrelay.sse import ServerSentEvent, SSEDecoder

perf_ns = time.perf_counter_ns
AUTH_LINES = [f"{name}: {value}" for name, value in bearer_headers(API_KEY).items()]


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
    """One attachment of a flow: loadgen's HTTP/1.1 decoding, the SSE decoded by
    ``tokenrelay.sse.SSEDecoder`` with its ``id:`` field; closes the socket itself at the
    flow's next drop point."""

    def __init__(self, flow: Flow, first: bool) -> None:
        super().__init__()
        self.flow = flow
        self.first = first  # the POST (else a re-attach)
        self.fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.ended = False
        self._head: bytearray | None = bytearray()
        self._errbody = b""
        self._decoder = SSEDecoder()
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
        for event in self._decoder.feed(piece):
            if self.ended:
                break
            self._event(event, now)

    def _event(self, event: ServerSentEvent, now: int) -> None:
        """One dispatched event (comments and a lone ``retry:`` dispatch none). The
        decoder carries the last ``id`` forward, so a frame without one shows here as a
        repeat of the previous sequence number: a duplicate."""
        data = event.data.encode()
        eid = event.id.encode() if event.id is not None else None
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
                if seq > flow.last_seq:  # as framed by the gateway: "id: X\ndata: Y\n\n"
                    flow.event_bytes += len(eid) + len(data) + 13
                flow.last_seq = seq
            else:
                flow.violations.append(f"frame without id: {data[:120]!r}")
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
        *AUTH_LINES,
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
        *AUTH_LINES,
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


async def one_request(port: int) -> str:
    """One tiny stream through the gateway (it also makes the hub sweep)."""
    flow = Flow(index=-1, start_at=0, drop_plan=[], pauses=[], aborts=[])
    why = await attach(flow, port, post_request(port, "fake/gen/1?ttft=0"), True, 10, Load())
    return why if flow.done == 1 else f"{why} (no [DONE])"
