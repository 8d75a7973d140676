"""The stream hub: every streaming answer is a ``Stream`` that outlives the connection
that asked for it.

A producer task writes numbered frames into the stream; readers (the original
connection, or a client that re-attached with ``Last-Event-ID``) read from any sequence
number and then follow live. Frames are kept, bounded in bytes per stream and in total,
for a retention window after the stream ends. When the last reader leaves an unfinished
stream, a grace timer starts: nobody back in time, and the producer is cancelled (which
closes the upstream); ``grace = 0`` cancels at once.

The grace is only for readers that can come back: a reader is ``resumable`` when its
client declared it resumes (tokenrelay's SDKs, the page, a resume itself, the GET route);
when the last reader leaves and it was not resumable, the producer is cancelled at once.

Every frame is kept as ``id: <stream>:<seq>`` + the event: the id line is put in front of
each whole SSE event the encoder made, so any protocol's frames can be numbered the same
way. Resumable readers get the frames so; the others get the provider's wire, without
the id lines (the live frames as the encoder made them; a backlog stripped of them).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..events import Error, GatewayError
from ..ids import token_urlsafe
from ..numbers import decimal
from .base import gone, not_found
from .frames import Frames
from .reader import PING, Reader

if TYPE_CHECKING:
    from .redis_mirror import RedisMirror, RemoteStream

# An in-stream error frame in a client protocol: (protocol name, error) -> bytes.
ErrorFrame = Callable[[str, Error], bytes]


class StreamState(enum.Enum):
    """How a stream is going to end, set in one place (``Stream._end_as``). Its producer
    learns of a stop only as a ``CancelledError``; this says which one it was (a
    timeout's is the watchdog's to tell, ``Watchdog.expired``). A shutdown wins over a
    stop: its error frame tells the client to resume or retry elsewhere."""

    LIVE = "live"  # produced until its upstream ends (``done`` then)
    CANCELLED = "cancelled"  # the user said stop, or nobody came back within the grace
    INTERRUPTED = "interrupted"  # this process is going away: ends with an error frame


__all__ = [
    "PING",
    "HubSettings",
    "Reader",
    "Stream",
    "StreamHub",
    "StreamState",
    "gone",
    "not_found",
]


@dataclass(slots=True)
class HubSettings:
    """``grace``: seconds an unfinished stream with no reader keeps running.
    ``retention``: seconds a finished stream stays resumable.
    Bytes: per stream (oldest frames dropped past it) and in total (oldest finished
    streams evicted past it)."""

    grace: float = 10.0
    retention: float = 300.0
    max_stream_bytes: int = 8 * 1024 * 1024
    max_total_bytes: int = 256 * 1024 * 1024


def parse_event_id(value: str | None) -> tuple[str, int] | None:
    """``"<stream>:<seq>"`` -> (stream, seq); None when absent. Anything else is a 400:
    a client that sends an id means to resume, and a guess would replay or regenerate."""
    if not value:
        return None
    stream_id, sep, text = value.strip().rpartition(":")
    seq = decimal(text)
    if not sep or not stream_id or seq is None:
        raise GatewayError(
            "invalid_request",
            "Last-Event-ID must be <stream id>:<sequence number> as the stream sent it.",
            param="last-event-id",
            code="invalid_event_id",
        )
    return stream_id, seq


class Stream:
    """One streaming answer: frames, readers, and the producer that writes them."""

    __slots__ = (
        "_grace_timer",
        "_hub",
        "_prefix",
        "_waiting",
        "background",
        "done",
        "finished_at",
        "id",
        "owner",
        "producer",
        "protocol",
        "readers",
        "resumes",
        "state",
        "store",
    )

    def __init__(
        self, hub: StreamHub, stream_id: str, owner: str | None, protocol: str, ids: bool = True
    ) -> None:
        self._hub = hub
        self.id = stream_id
        self.owner = owner
        self.protocol = protocol
        self.store = Frames()
        self.done = False  # the frames are complete (however it ended: ``state``)
        self.state = StreamState.LIVE
        self.finished_at: float | None = None
        self.readers = 0
        self.resumes = 0
        self.producer: asyncio.Task[None] | None = None
        # Runs whoever reads it (a Responses ``background`` response): readers leaving
        # never stop it; only a stop (``cancel``), a timeout or a shutdown does.
        self.background = False
        # The caught-up readers: a publish writes to their sinks or wakes them; the
        # hub's ticker wakes a long-silent one with a ping.
        self._waiting: list[Reader] = []
        self._grace_timer: asyncio.TimerHandle | None = None
        # ``ids`` False: frames go out as they are, without ``id:`` lines (clients whose
        # parsers read nothing but ``data:`` lines); they are numbered all the same.
        self._prefix = b"id: " + stream_id.encode() + b":" if ids else b""

    @property
    def last_seq(self) -> int:
        return self.store.last

    @property
    def base(self) -> int:
        """The number of the last frame no longer kept (0 while all are)."""
        return self.store.base

    @property
    def nbytes(self) -> int:
        return self.store.nbytes

    @property
    def frames(self) -> list[bytes]:
        """The newest frames, as sent (none once the stream is packed)."""
        return self.store.live

    def _pack(self) -> None:
        """A finished stream is read again only on a resume: keep it all compressed."""
        self._hub.total_bytes += self.store.pack()

    # --- the producer's side ----------------------------------------------------------

    def publish(self, frames: list[bytes]) -> None:
        """Number every SSE event in ``frames``, keep them, wake the readers.

        Each item is one whole SSE event (the contract of every encoder, see
        ``protocols/base.py``): each is numbered on its own, so a client that received
        part of a batch resumes exactly after the last event it got."""
        if not frames:
            return
        store = self.store
        first = seq = store.last
        prefix = self._prefix
        new: list[bytes] = []
        if prefix:
            for item in frames:
                seq += 1
                new.append(prefix + b"%d\n" % seq + item)
        else:
            new = list(frames)
            seq += len(new)
        data = new[0] if len(new) == 1 else b"".join(new)
        plain = frames[0] if len(frames) == 1 else b"".join(frames)
        before = store.nbytes
        for frame in new:
            store.add(frame)
        store.compact()
        limit = self._hub.settings.max_stream_bytes
        if store.nbytes > limit:
            store.trim(limit)
        self._hub.total_bytes += store.nbytes - before
        mirror = self._hub.mirror
        if mirror is not None:
            mirror.published(self, first + 1, new)
        if self._waiting:
            self._deliver(data, plain)

    def _deliver(self, data: bytes, plain: bytes) -> None:
        """The new frames to the caught-up readers: written to their sinks at once, or
        their tasks woken to take them."""
        last = self.last_seq
        now = time.monotonic()  # not the loop's clock: get_running_loop() is a getpid()
        direct = []
        for reader in self._waiting:
            if reader.push(data if reader.resumable else plain, last, now):
                direct.append(reader)
            else:
                reader.wake(False)
        self._waiting = direct

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        self.finished_at = time.monotonic()
        self._cancel_grace()
        self._wake()
        self._hub._finished(self)
        if self._hub.mirror is not None:
            self._hub.mirror.finished(self)

    def behind(self, pos: int) -> bytes | None:
        """The frame that ends a reader at ``pos`` fallen behind the frames kept."""
        return self._hub.behind(self, pos)

    def release(self) -> None:
        """Forget the frames (eviction)."""
        self._hub.total_bytes -= self.store.clear()

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, []
        for reader in waiting:
            reader.wake(False)

    def _ping_silent(self, now: float) -> None:
        """Ping the readers that got nothing for a whole keep-alive interval."""
        waiting, self._waiting = self._waiting, []
        keep = [r for r in waiting if now - r.since < r.keepalive or r.ping(now)]
        self._waiting = keep + self._waiting

    def _wait(self, reader: Reader) -> None:
        self._waiting.append(reader)
        self._hub.tick(reader.keepalive)

    def _unwait(self, reader: Reader) -> None:
        if reader in self._waiting:
            self._waiting.remove(reader)

    # --- the readers' side ------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the producer at once (the user said stop, or nobody came back)."""
        self._end_as(StreamState.CANCELLED)
        self._stop()

    def interrupt(self) -> None:
        """Stop the producer because this process is going away: the stream ends with
        an error frame, not as if the answer were complete."""
        self._end_as(StreamState.INTERRUPTED)
        self._stop()

    def abandon(self) -> None:
        """Its client left before the upstream answered: it ends cancelled (unless
        interrupted already), and nothing is cancelled here (the caller is the producer)."""
        self._end_as(StreamState.CANCELLED)

    def _end_as(self, state: StreamState) -> None:
        if self.state is not StreamState.INTERRUPTED:
            self.state = state

    def _stop(self) -> None:
        self._cancel_grace()
        if self.producer is not None and not self.producer.done():
            self.producer.cancel()

    def _cancel_grace(self) -> None:
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None

    def _detach(self, resumable: bool) -> None:
        """A reader left. The last one leaving starts the grace if it can come back
        (it declared it resumes); otherwise the upstream is closed at once: the one
        rule, here."""
        self.readers -= 1
        if self.readers > 0 or self.done or self.background:
            return
        self._hub.detached += 1
        grace = self._hub.settings.grace if resumable else 0.0
        if grace <= 0:
            self.cancel()
        else:
            self._grace_timer = asyncio.get_running_loop().call_later(grace, self._grace_over)

    def orphaned(self, resumable: bool) -> None:
        """The client of a reader that had not begun left (its upstream was still being
        opened): the same rule as a reader leaving."""
        self.readers += 1
        self._detach(resumable)

    def _grace_over(self) -> None:
        self._grace_timer = None
        if self.readers > 0 or self.done:
            return
        if self._hub.mirror is None:
            self.cancel()
        else:  # a reader on another replica keeps it going too
            task = asyncio.ensure_future(self._grace_over_remote())
            self._hub.background.add(task)
            task.add_done_callback(self._hub.background.discard)

    async def _grace_over_remote(self) -> None:
        assert self._hub.mirror is not None
        if self.readers > 0 or self.done:
            return
        if await self._hub.mirror.has_remote_reader(self.id):
            grace = self._hub.settings.grace
            self._grace_timer = asyncio.get_running_loop().call_later(grace, self._grace_over)
        else:
            self.cancel()

    async def stop(self) -> str:
        """The stop route: cancel if still running; the stream's status."""
        if not self.done:
            self.cancel()
        return "cancelled" if self.state is StreamState.CANCELLED else "finished"

    def read(self, after: int, keepalive: float, resumable: bool = True) -> Reader:
        """Every frame after sequence number ``after``, then the live ones, until the
        stream ends; a ``: ping`` comment whenever ``keepalive`` seconds pass quietly.
        ``resumable``: the frames carry their ids, and leaving starts the grace.
        Raises ``GatewayError`` at once (before any byte) if ``after`` cannot be served."""
        if after < self.base:
            raise gone(self.id, f"frames up to {self.base} are no longer kept")
        if after > self.last_seq:
            raise GatewayError(
                "invalid_request", f"Stream {self.id} has no frame {after} yet.", param="after"
            )
        self._cancel_grace()
        return Reader(self, after, keepalive, resumable)


class StreamHub:
    """The in-process stream store (the default backend)."""

    def __init__(
        self,
        settings: HubSettings | None = None,
        mirror: RedisMirror | None = None,
        error_frame: ErrorFrame | None = None,
    ) -> None:
        self.settings = settings or HubSettings()
        self.mirror = mirror
        self.error_frame = error_frame
        self.background: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._tick = 0.0
        self.total_bytes = 0
        self.detached = 0  # times a live stream lost its last reader
        self._live: dict[str, Stream] = {}
        self._finished_streams: OrderedDict[str, Stream] = OrderedDict()
        self._unpacked: list[Stream] = []  # finished, frames not yet compressed
        self._evicted: OrderedDict[str, str | None] = OrderedDict()  # id -> owner, for 410s

    def create(
        self, owner: str | None, protocol: str, ids: bool = True, stream_id: str | None = None
    ) -> Stream:
        """A new live stream; ``stream_id`` names it (a background response's id), else
        a fresh ``st_`` id does."""
        self.sweep()
        stream = Stream(self, stream_id or f"st_{token_urlsafe(18)}", owner, protocol, ids)
        self._live[stream.id] = stream
        if self.mirror is not None:
            self.mirror.created(stream)
        return stream

    def tick(self, keepalive: float) -> None:
        """Make sure silent readers get pinged: one ticker for all streams, checking
        every half keep-alive interval (so a ping follows 1 to 1.5 intervals of quiet)."""
        if self._ticker is None or self._ticker.done() or keepalive / 2 < self._tick:
            if self._ticker is not None:
                self._ticker.cancel()
            self._tick = keepalive / 2
            self._ticker = asyncio.ensure_future(self._ping_loop(self._tick))

    async def _ping_loop(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for stream in list(self._live.values()):
                if stream._waiting:
                    stream._ping_silent(now)

    def behind(self, stream: Stream, pos: int) -> bytes | None:
        """What a reader at ``pos`` that fell behind the frames kept gets: an error frame
        in the stream's protocol (its frames up to ``stream.base`` are gone, so a resume
        cannot fill the gap either: re-send the request), then the end."""
        if self.error_frame is None:
            return None
        error = gone(
            stream.id,
            f"this reader fell behind: frames {pos + 1} to {stream.base} are no longer "
            "kept (streams.max_stream_bytes); re-send the request",
        )
        return self.error_frame(stream.protocol, error.event())

    def local(self, stream_id: str) -> Stream | None:
        return self._live.get(stream_id) or self._finished_streams.get(stream_id)

    async def find(self, stream_id: str, owner: str | None) -> Stream | RemoteStream:
        """Like ``get``, and when another replica produces the stream, read it through
        the Redis mirror."""
        try:
            return self.get(stream_id, owner)
        except GatewayError as error:
            if self.mirror is None or error.status != 404:
                raise
            remote = await self.mirror.find(stream_id, owner)
            if remote is None:
                raise
            return remote

    async def start(self) -> None:
        """Start the periodic sweep (an idle gateway still lets expired streams go)."""
        self._sweeper = asyncio.ensure_future(self._sweep_loop())
        if self.mirror is not None:
            await self.mirror.start(self)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self.pack()
            self.sweep()

    async def pack(self, budget: float = 0.00025, pause: float = 0.001) -> None:
        """Compress the finished streams nobody is reading, off the request path: in
        slices of at most ``budget`` seconds, ``pause`` seconds apart. A thousand
        streams that end together are ~100 ms of zlib, which in one go would stall every
        live stream (measured: a 90 ms gap in the 500-stream benchmark). Slices with no
        pause between them (1 ms each, tried) still delayed each step of every request:
        the next slice ran before the steps the previous one had let in, so a request
        arriving during packing took 3-4 ms instead of 0.5 to its first token."""
        clock = time.perf_counter
        start = clock()
        streams, self._unpacked = self._unpacked, []
        for stream in streams:
            if stream.readers:  # being read: next time
                self._unpacked.append(stream)
            elif stream.frames:  # (none left if it was evicted meanwhile)
                stream._pack()
            if clock() - start > budget:
                await asyncio.sleep(pause)
                start = clock()

    def get(self, stream_id: str, owner: str | None) -> Stream:
        """The stream, if it exists and belongs to ``owner``; 404 otherwise (a stream of
        another key is not acknowledged), 410 if it was evicted."""
        stream = self._live.get(stream_id) or self._finished_streams.get(stream_id)
        if stream is not None and stream.owner == owner:
            return stream
        if stream is None and stream_id in self._evicted and self._evicted[stream_id] == owner:
            raise gone(stream_id, "it ended longer ago than the retention window")
        raise not_found(stream_id)

    def _finished(self, stream: Stream) -> None:
        self._live.pop(stream.id, None)
        self._finished_streams[stream.id] = stream
        self._unpacked.append(stream)
        self.sweep()

    def sweep(self) -> None:
        """Evict finished streams past retention, then the oldest past the byte limit."""
        now = time.monotonic()
        retention = self.settings.retention
        while self._finished_streams:
            stream_id, stream = next(iter(self._finished_streams.items()))
            expired = stream.finished_at is not None and now - stream.finished_at > retention
            if not expired and self.total_bytes <= self.settings.max_total_bytes:
                break
            if stream.readers and not expired:
                break
            del self._finished_streams[stream_id]
            stream.release()
            self._evicted[stream_id] = stream.owner
            if len(self._evicted) > 100_000:
                self._evicted.popitem(last=False)

    def live(self) -> list[Stream]:
        return list(self._live.values())

    async def drain(self, timeout: float) -> None:
        """Let the streams being produced finish, for up to ``timeout`` seconds; then
        interrupt the rest (they end with an error frame a client can resume from)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._live and loop.time() < deadline:
            await asyncio.sleep(0.05)
        producers = [s.producer for s in self._live.values() if s.producer is not None]
        for stream in list(self._live.values()):
            stream.interrupt()
        if producers:
            await asyncio.wait(producers, timeout=5)

    async def aclose(self) -> None:
        for task in (self._ticker, self._sweeper):
            if task is not None:
                task.cancel()
        await self._cancel_all()
        if self.mirror is not None:
            await self.mirror.aclose()

    async def _cancel_all(self) -> None:
        """Cancel every producer and wait for them to end."""
        producers = [s.producer for s in self._live.values() if s.producer is not None]
        for stream in list(self._live.values()):
            stream.cancel()
        if producers:
            await asyncio.wait(producers, timeout=5)
