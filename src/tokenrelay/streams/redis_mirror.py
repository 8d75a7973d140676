"""Streams shared across replicas through Redis Streams.

The replica producing a stream keeps it in memory (its own readers never wait on Redis)
and mirrors every numbered frame to a Redis Stream, entry id ``0-<seq>``, from one
writer task that batches all streams' new frames into one pipeline per wake-up. Any
replica can then serve a resume: it reads the entries after ``Last-Event-ID`` and
follows with ``XREAD BLOCK``.

Keys (``tokenrelay:`` prefix): ``<id>:frames`` (the Redis Stream), ``<id>:meta`` (owner,
protocol, state), ``<id>:alive`` (the producer's heartbeat, a short TTL refreshed every
second), ``<id>:readers`` (a remote reader is attached: the producer's grace timer waits
for it). Channel ``tokenrelay:cancel`` carries stop requests to the producing replica,
``tokenrelay:resumed`` the resumes another replica served (counted in the producer's
usage record; one that lands after the record was written is not, as on one replica).
A reader that finds the stream unfinished and the heartbeat gone for ``DEAD_AFTER``
seconds more gets the frames kept, then an error frame saying the stream was
interrupted: never a hang. One missing heartbeat is not a death: a producer starved of
CPU for a few seconds (a loaded machine, or Redis's writes paused) lets the key lapse
and then refreshes it and goes on; taken for dead at once, its reader got
``stream_interrupted`` in the middle of a live stream (an error frame has no ``id:``,
so the client saw the last frame's id twice and lost the rest).

Frames reach Redis a moment after the producer's own readers have them: the writer
task flushes once per wake-up, off the producer's path. Awaiting Redis before
each delivery would add a Redis round trip to every chunk a client waits for (a
one-XADD pipeline through redis-py took 0.8-1.5 ms on the loaded 2-core test machine's
loopback, measured; more between hosts), so the promise "a frame a client has seen is
resumable everywhere" is kept on the reading side instead: a resume on another replica
after a frame Redis does not hold yet, of a stream still live there, is answered and
waits for it (XREAD after that frame); if the producer dies first the reader gets the
``stream_interrupted`` frame, never a 400. Frames the producer gave up mirroring
(Redis too far behind) end a remote reader with a ``stream_gone`` frame, never a gap.

A reader blocks in ``XREAD`` for at most ``BLOCK`` seconds at a time, well inside
redis-py's socket timeout (``SOCKET_TIMEOUT``): a longer block would be cut by the
client as a dead connection. Pings go out from the quiet time counted over those
blocks, every ``keepalive`` seconds as on the producing replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from ..events import Error, GatewayError
from ..ids import token_hex
from .base import LocalStreams, MirroredStream, gone
from .reader import PING

log = logging.getLogger("tokenrelay.streams")

PREFIX = "tokenrelay:"
CANCEL_CHANNEL = PREFIX + "cancel"
RESUMED_CHANNEL = PREFIX + "resumed"
HEARTBEAT = 1.0  # seconds between heartbeats of a live stream
ALIVE_TTL = 4  # seconds without a heartbeat before a producer is taken for dead
MAX_PENDING = 100_000  # frames waiting for Redis, beyond which mirroring gives up a batch
FLUSH_EVERY = 0.01  # seconds: the writer flushes at most this often (frames batch up)
SOCKET_TIMEOUT = 5.0  # redis-py's per-reply timeout: a reply slower than this is an error
BLOCK = 1.0  # seconds one XREAD of a remote reader blocks: far inside SOCKET_TIMEOUT
READER_TTL = 4  # seconds a remote reader's mark outlives its last XREAD
DEAD_AFTER = float(ALIVE_TTL)  # seconds the heartbeat stays gone before "interrupted"

INTERRUPTED = Error(
    "upstream",
    "The stream was interrupted: the gateway producing it stopped. Retry the request.",
    502,
    code="stream_interrupted",
)
STORE_LOST = Error(
    "upstream",
    "The stream store (Redis) stopped answering; resume this stream (Last-Event-ID).",
    502,
    code="stream_store_unavailable",
)


_APPEND = """
local a = 1
for k = 1, #KEYS do
  local seq, count = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  for i = 0, count - 1 do
    redis.pcall('XADD', KEYS[k], '0-' .. (seq + i), 'f', ARGV[a + 2 + i])
  end
  a = a + 2 + count
end
return #KEYS
"""
"""Appends frames to their streams' entries ``0-<seq>``. KEYS: one ``<id>:frames`` per
run of frames; ARGV per key: first seq, count, the frames. One command for a whole
flush: redis-py's cost is per command (packing, reply parsing, its bookkeeping), which
was most of the mirror's cost per chunk when each frame was its own XADD (measured:
``bench/RESULTS.md``). ``pcall``: an id already there (a flush retried) is skipped."""


def _unmirrored(stream: RemoteStream, seq: int, first: int) -> Error:
    message = f"frames {seq + 1} to {first - 1} never reached Redis; re-send the request"
    return gone(stream.id, message).event()


def _key(stream_id: str, part: str) -> str:
    return f"{PREFIX}{stream_id}:{part}"


class RemoteStream:
    """A stream produced by another replica, read (and stopped) through Redis."""

    def __init__(
        self,
        mirror: RedisMirror,
        stream_id: str,
        protocol: str,
        first: int,
        last: int,
        done: bool,
    ) -> None:
        self.mirror = mirror
        self.id = stream_id
        self.protocol = protocol
        self.first = first  # the oldest frame kept is first + 1
        self.last = last
        self.done = done
        self.resumes = 0

    def read(self, after: int, keepalive: float) -> AsyncIterator[bytes]:
        """Frames after ``after``. A frame Redis does not hold yet of a live stream is
        waited for (the client may have seen it before it was mirrored); of a finished
        stream it never existed: 400."""
        if after < self.first:
            raise gone(self.id, f"frames up to {self.first} are no longer kept")
        if after > self.last and self.done:
            raise GatewayError(
                "invalid_request", f"Stream {self.id} has no frame {after}.", param="after"
            )
        return self.mirror.follow(self, after, keepalive)

    async def stop(self) -> str:
        if self.done:
            return "finished"
        await self.mirror.redis.publish(CANCEL_CHANNEL, self.id)
        return "cancelled"


class RedisMirror:
    def __init__(
        self, url: str, retention: float, error_frame: Callable[[str, Error], bytes]
    ) -> None:
        # Typed as Any: redis-py's reply types are unions of every RESP shape; the code
        # below knows which shape each command returns with decode_responses off.
        self.redis: Any = aioredis.from_url(url, socket_timeout=SOCKET_TIMEOUT)
        self.retention = max(1, int(retention))
        self.replica = token_hex(6)
        self._error_frame = error_frame
        self._pending: list[tuple[str, Any]] = []
        self._pending_frames = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._hub: LocalStreams | None = None
        self._append_sha = ""
        self._conn: Any = None  # the writer's own connection, held while it works
        self._closing = False

    async def start(self, hub: LocalStreams) -> None:
        self._hub = hub
        await self.redis.ping()
        self._append_sha = await self.redis.script_load(_APPEND)
        self._tasks = [
            asyncio.create_task(self._writer()),
            asyncio.create_task(self._heartbeat()),
            asyncio.create_task(self._cancels()),
        ]

    async def aclose(self) -> None:
        self._closing = True  # the writer flushes what is pending, then returns
        self._wake.set()
        if self._tasks:
            await asyncio.wait(self._tasks[:1], timeout=SOCKET_TIMEOUT)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):  # no writer (never started): here
            await self._flush()
        if self._conn is not None:
            await self.redis.connection_pool.release(self._conn)
        await self.redis.aclose()

    # --- the producing replica ---------------------------------------------------------

    def created(self, stream: MirroredStream) -> None:
        self._queue("create", stream)

    def published(self, stream: MirroredStream, first_seq: int, frames: list[bytes]) -> None:
        if self._pending_frames > MAX_PENDING:
            log.warning("Redis is behind: frames of stream %s are not mirrored", stream.id)
            return
        self._pending_frames += len(frames)
        self._queue("frames", (stream.id, first_seq, frames))

    def finished(self, stream: MirroredStream) -> None:
        self._queue("finish", stream)

    def _queue(self, op: str, item: Any) -> None:
        self._pending.append((op, item))
        self._wake.set()

    async def _writer(self) -> None:
        clock = time.monotonic
        while True:
            await self._wake.wait()
            self._wake.clear()
            started = clock()
            try:
                await self._flush()
            except (RedisError, OSError) as exc:
                log.warning("mirroring streams to Redis failed: %s", exc)
                if self._closing:
                    return
                await asyncio.sleep(0.5)
            if self._closing:
                return
            rest = FLUSH_EVERY - (clock() - started)
            if rest > 0:  # what comes meanwhile goes in the next flush, together
                await asyncio.sleep(rest)

    async def _flush(self) -> None:
        pending, self._pending, self._pending_frames = self._pending, [], 0
        if not pending:
            return
        try:
            await self._write(pending)
        except NoScriptError:  # Redis restarted or flushed its scripts: load, once more
            self._append_sha = await self.redis.script_load(_APPEND)
            await self._write(pending)  # XADDs of ids already there are skipped

    async def _write(self, pending: list[tuple[str, Any]]) -> None:
        """``pending`` in order, in one round trip on the writer's own connection: each
        run of frames (of any streams) as one ``_APPEND`` call, the other operations as
        themselves. Sent as raw commands, not through a redis-py pipeline: its retry,
        bookkeeping and per-command reply handling were most of a flush's cost (py-spy,
        ``bench/RESULTS.md``). A failed flush drops the connection (replies may be left
        unread on it); the next one opens another."""
        commands: list[tuple[Any, ...]] = []
        keys: list[str] = []
        args: list[Any] = []
        for op, item in pending:
            if op == "frames":
                stream_id, seq, frames = item
                keys.append(_key(stream_id, "frames"))
                args += (seq, len(frames), *frames)
                continue
            if keys:  # the frames before this operation go first (a finish expires them)
                commands.append(("EVALSHA", self._append_sha, len(keys), *keys, *args))
                keys, args = [], []
            meta = _key(item.id, "meta")
            if op == "create":
                fields = ("owner", item.owner or "", "protocol", item.protocol, "state", "live")
                commands.append(("HSET", meta, *fields))
                commands.append(("SET", _key(item.id, "alive"), self.replica, "EX", ALIVE_TTL))
                commands.append(("EXPIRE", meta, self.retention + 3600))
            elif op == "finish":
                commands.append(("HSET", meta, "state", "done"))
                commands.append(("DEL", _key(item.id, "alive")))
                commands.append(("EXPIRE", meta, self.retention))
                commands.append(("EXPIRE", _key(item.id, "frames"), self.retention))
        if keys:
            commands.append(("EVALSHA", self._append_sha, len(keys), *keys, *args))
        if self._conn is None:
            self._conn = await self.redis.connection_pool.get_connection()
        conn = self._conn
        try:
            await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
            for _ in commands:
                await conn.read_response()
        except BaseException:
            self._conn = None
            await conn.disconnect()
            await self.redis.connection_pool.release(conn)
            raise

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            hub = self._hub
            if hub is None or not hub.live():
                continue
            try:
                pipe = self.redis.pipeline(transaction=False)
                for stream in hub.live():
                    pipe.set(_key(stream.id, "alive"), self.replica, ex=ALIVE_TTL)
                await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("stream heartbeat to Redis failed: %s", exc)

    async def _cancels(self) -> None:
        """Stops and resumes asked for through other replicas, of streams made here."""
        while True:
            try:
                pubsub = self.redis.pubsub()
                await pubsub.subscribe(CANCEL_CHANNEL, RESUMED_CHANNEL)
                async for message in pubsub.listen():
                    if message.get("type") != "message" or self._hub is None:
                        continue
                    stream = self._hub.local(message["data"].decode())
                    if stream is None or stream.done:
                        continue
                    if message["channel"] == CANCEL_CHANNEL.encode():
                        stream.cancel()
                    else:
                        stream.resumes += 1
            except (RedisError, OSError) as exc:
                log.warning("listening for stream cancels failed: %s", exc)
                await asyncio.sleep(1)

    async def has_remote_reader(self, stream_id: str) -> bool:
        try:
            return bool(await self.redis.exists(_key(stream_id, "readers")))
        except (RedisError, OSError):
            return False

    async def producing(self, stream_id: str) -> bool:
        """Some replica still produces the stream (its heartbeat is on); True when Redis
        cannot tell (a stream is not taken for lost on a doubt)."""
        try:
            return bool(await self.redis.exists(_key(stream_id, "alive")))
        except (RedisError, OSError):
            return True

    # --- any replica ------------------------------------------------------------------

    async def find(self, stream_id: str, owner: str | None) -> RemoteStream | None:
        try:
            meta = await self.redis.hgetall(_key(stream_id, "meta"))
            if not meta or meta.get(b"owner", b"").decode() != (owner or ""):
                return None
            key = _key(stream_id, "frames")
            first_entry = await self.redis.xrange(key, count=1)
            last_entry = await self.redis.xrevrange(key, count=1)
        except (RedisError, OSError) as exc:
            raise GatewayError("upstream", f"the stream store is unavailable: {exc}") from None
        first = int(first_entry[0][0].split(b"-")[1]) - 1 if first_entry else 0
        last = int(last_entry[0][0].split(b"-")[1]) if last_entry else 0
        done = meta.get(b"state") == b"done"
        return RemoteStream(self, stream_id, meta[b"protocol"].decode(), first, last, done)

    async def follow(
        self, stream: RemoteStream, after: int, keepalive: float
    ) -> AsyncIterator[bytes]:
        """Frames after ``after`` from Redis, then new ones as they are mirrored, with a
        ping after every ``keepalive`` seconds of quiet; the end of the stream, or an
        error frame when its producer died or Redis stopped answering."""
        try:
            if after > 0:  # counted in the producer's usage record
                await self.redis.publish(RESUMED_CHANNEL, stream.id)
            async for data in self._follow(stream, after, keepalive):
                yield data
        except (RedisError, OSError) as exc:
            log.warning("reading stream %s from Redis failed: %s", stream.id, exc)
            yield self._error_frame(stream.protocol, STORE_LOST)

    async def _follow(
        self, stream: RemoteStream, after: int, keepalive: float
    ) -> AsyncIterator[bytes]:
        key = _key(stream.id, "frames")
        meta = _key(stream.id, "meta")
        readers = _key(stream.id, "readers")
        position = f"0-{after}"
        seq = after  # the last frame delivered
        block = max(10, int(min(keepalive, BLOCK) * 1000))
        clock = time.monotonic
        quiet = marked = 0.0
        lapsed = 0.0  # clock() when the heartbeat was first seen gone (0: it is there)
        while True:
            now = clock()
            if now - marked >= 1.0:  # the producer's grace waits while this mark is on
                await self.redis.set(readers, self.replica, ex=READER_TTL)
                marked = now
            quiet = quiet or now
            reply = await self.redis.xread({key: position}, block=block, count=1000)
            entries = reply[0][1] if reply else []
            if entries:
                first = int(entries[0][0].split(b"-")[1])
                if first != seq + 1:  # frames the producer gave up mirroring (MAX_PENDING)
                    yield self._error_frame(stream.protocol, _unmirrored(stream, seq, first))
                    return
                position = entries[-1][0].decode()
                seq = int(entries[-1][0].split(b"-")[1])
                quiet = lapsed = 0.0
                yield b"".join(fields[b"f"] for _, fields in entries)
                continue
            pipe = self.redis.pipeline(transaction=False)
            pipe.hget(meta, "state")
            pipe.exists(_key(stream.id, "alive"))
            state, alive = await pipe.execute()
            if state == b"done":
                # a last look: frames written between the read and the state check
                tail = await self.redis.xread({key: position}, count=1000)
                if tail:
                    yield b"".join(fields[b"f"] for _, fields in tail[0][1])
                elif seq == after > 0:
                    last = await self.redis.xrevrange(key, count=1)
                    if not last or int(last[0][0].split(b"-")[1]) < after:
                        missing = GatewayError(
                            "invalid_request", f"Stream {stream.id} has no frame {after}."
                        )
                        yield self._error_frame(stream.protocol, missing.event())
                return
            if alive:
                lapsed = 0.0
            else:
                lapsed = lapsed or clock()
                if clock() - lapsed >= DEAD_AFTER:
                    yield self._error_frame(stream.protocol, INTERRUPTED)
                    return
            if clock() - quiet >= keepalive:
                quiet = 0.0
                yield PING
