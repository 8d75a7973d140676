"""The remote reader (``RedisMirror.follow``) against a real Redis, the producer played
by the test: a producer whose heartbeat lapsed for a moment (starved of CPU, or Redis's
writes paused) and then goes on is followed to its end, with no ``stream_interrupted``
in the middle; one that stays gone still ends its reader with that error frame."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from support.services import shared_redis

from tokenrelay.events import Error
from tokenrelay.ids import token_hex
from tokenrelay.sse import SSEDecoder
from tokenrelay.streams import redis_mirror
from tokenrelay.streams.redis_mirror import RedisMirror, RemoteStream


def error_frame(protocol: str, error: Error) -> bytes:
    body = {"error": {"code": error.code, "message": error.message}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def frame(stream_id: str, seq: int) -> bytes:
    return b'id: %s:%d\ndata: {"n": %d}\n\n' % (stream_id.encode(), seq, seq)


@pytest.fixture
async def mirror() -> AsyncIterator[RedisMirror]:
    made = RedisMirror(shared_redis().url, 60, error_frame)
    yield made
    await made.redis.aclose()


async def live_stream(control: aioredis.Redis, stream_id: str) -> None:
    """A stream as its producer's mirror leaves it: meta live, frame 1, no heartbeat
    (it lapsed)."""
    meta = {"owner": "", "protocol": "openai", "state": "live"}
    await control.hset(f"tokenrelay:{stream_id}:meta", mapping=meta)  # type: ignore[arg-type]
    await control.xadd(f"tokenrelay:{stream_id}:frames", {"f": frame(stream_id, 1)}, id="0-1")


def events(chunks: list[bytes]) -> list[tuple[str | None, str]]:
    decoder = SSEDecoder()
    return [(e.id, e.data) for chunk in chunks for e in decoder.feed(chunk)]


async def test_a_lapsed_heartbeat_that_comes_back_is_not_an_interruption(
    mirror: RedisMirror,
) -> None:
    stream_id = f"st_{token_hex(8)}"
    control = aioredis.Redis.from_url(shared_redis().url)
    try:
        await live_stream(control, stream_id)

        async def producer_comes_back() -> None:
            # longer than a reader's XREAD block, so it looks while the heartbeat is gone
            await asyncio.sleep(redis_mirror.BLOCK * 2.5)
            await control.set(f"tokenrelay:{stream_id}:alive", "a", ex=redis_mirror.ALIVE_TTL)
            for seq in (2, 3):
                f = frame(stream_id, seq)
                await control.xadd(f"tokenrelay:{stream_id}:frames", {"f": f}, id=f"0-{seq}")
            await control.hset(f"tokenrelay:{stream_id}:meta", "state", "done")

        back = asyncio.ensure_future(producer_comes_back())
        remote = RemoteStream(mirror, stream_id, "openai", 0, 1, False)
        got = [chunk async for chunk in remote.read(1, keepalive=30)]
        await back
        assert events(got) == [(f"{stream_id}:2", '{"n": 2}'), (f"{stream_id}:3", '{"n": 3}')]
    finally:
        await control.aclose()


async def test_a_heartbeat_that_stays_gone_ends_the_reader_with_an_error_frame(
    mirror: RedisMirror,
) -> None:
    stream_id = f"st_{token_hex(8)}"
    control = aioredis.Redis.from_url(shared_redis().url)
    try:
        await live_stream(control, stream_id)
        remote = RemoteStream(mirror, stream_id, "openai", 0, 1, False)
        started = time.monotonic()
        got = [chunk async for chunk in remote.read(0, keepalive=30)]
        assert time.monotonic() - started >= redis_mirror.DEAD_AFTER
        out = events(got)
        assert out[0] == (f"{stream_id}:1", '{"n": 1}')
        assert json.loads(out[-1][1])["error"]["code"] == "stream_interrupted"
        assert len(out) == 2
    finally:
        await control.aclose()
