"""The stream hub in process: every frame after any position, live or after the stream
finished (when its frames are kept compressed), exactly once and in order; byte
accounting that returns to zero."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenrelay.events import GatewayError
from tokenrelay.sse import SSEDecoder, encode
from tokenrelay.streams.hub import HubSettings, StreamHub

TEXT = st.text(  # SSE turns CR into LF; a lone surrogate is not UTF-8 (sent as "?")
    st.characters(blacklist_characters="\r", blacklist_categories=("Cs",)), max_size=40
)
payloads = st.lists(st.lists(TEXT, min_size=1, max_size=4), min_size=1, max_size=30)


async def _collect(reader: object) -> bytes:
    out = b""
    async for piece in reader:  # type: ignore[attr-defined]
        out += piece
    return out


@settings(max_examples=150, deadline=None)
@given(batches=payloads, data=st.data())
def test_any_position_live_or_packed(batches: list[list[str]], data: st.DataObject) -> None:
    async def run() -> None:
        hub = StreamHub(HubSettings(grace=0))
        stream = hub.create(None, "openai")
        sent: list[str] = []
        for batch in batches:
            # several events in one batch: the hub numbers each (one event per item)
            stream.publish([encode(text) for text in batch])
            sent += batch
        live_after = data.draw(st.integers(0, len(sent)))
        live = stream.read(live_after, keepalive=30)
        stream.finish()
        await hub.pack()  # what the timer does: finished frames kept compressed
        packed_after = data.draw(st.integers(0, len(sent)))
        for after, reader in ((live_after, live), (packed_after, stream.read(packed_after, 30))):
            events = list(SSEDecoder().iter([await _collect(reader)]))
            assert [e.data for e in events] == sent[after:]
            assert [e.id for e in events] == [
                f"{stream.id}:{i}" for i in range(after + 1, len(sent) + 1)
            ]
        assert hub.total_bytes == stream.nbytes > 0
        stream.release()
        assert hub.total_bytes == 0

    asyncio.run(run())


def test_a_stream_over_its_byte_bound_keeps_its_newest_frames() -> None:
    async def run() -> None:
        hub = StreamHub(HubSettings(grace=0, max_stream_bytes=2000))
        stream = hub.create(None, "openai")
        sent = [f"frame {i} " + "x" * 50 for i in range(100)]
        for text in sent:
            stream.publish([encode(text)])
        assert 0 < stream.nbytes <= 2000 and hub.total_bytes == stream.nbytes
        assert stream.base > 0 and stream.last_seq == 100
        with pytest.raises(GatewayError) as info:
            stream.read(stream.base - 1, 30)
        assert info.value.status == 410
        stream.finish()
        events = list(SSEDecoder().iter([await _collect(stream.read(stream.base, 30))]))
        assert [e.data for e in events] == sent[stream.base :]
        assert events[0].id == f"{stream.id}:{stream.base + 1}"

    asyncio.run(run())


def test_packing_yields_to_the_live_streams_between_slices() -> None:
    """Many streams that end together are compressed a slice at a time, with the event
    loop free in between; a stream being read is left as it is."""

    async def run() -> None:
        hub = StreamHub(HubSettings(grace=30))
        streams = [hub.create(None, "openai") for _ in range(3)]
        for stream in streams:
            stream.publish([encode("x" * 100)])
            stream.finish()
        reading = hub.create(None, "openai")
        reading.publish([encode("y")])
        reading.finish()
        reader = reading.read(0, 30)
        assert await reader.__anext__()  # type: ignore[attr-defined]
        order: list[str] = []

        async def live() -> None:
            for _ in range(3):
                order.append("live")
                await asyncio.sleep(0)

        async def pack() -> None:
            await hub.pack(budget=0)
            order.append("packed")

        await asyncio.gather(pack(), live())
        assert order.index("live", 1) < order.index("packed")  # interleaved, not one go
        assert all(s.frames == [] for s in streams)
        assert reading.frames  # its reader is still on it
        await reader.aclose()  # type: ignore[attr-defined]
        assert hub.total_bytes == sum(s.nbytes for s in [*streams, reading])

    asyncio.run(run())


def test_a_following_reader_takes_frames_and_pings_through_its_sink() -> None:
    """A reader that follows with no task (the request's own task produces the stream):
    live frames and keep-alive pings go straight to its sink; when the sink refuses,
    ``on_behind`` is called once and a task carries on from where the reader stands;
    when its client goes away it leaves the stream at once."""

    async def run() -> None:
        hub = StreamHub(HubSettings(grace=30))
        stream = hub.create(None, "openai")
        written: list[bytes] = []
        accept = True
        behind: list[bool] = []

        def sink(data: bytes) -> bool:
            if accept:
                written.append(data)
            return accept

        reader = stream.read(0, keepalive=0.02)
        reader.follow(sink, lambda: behind.append(True))
        assert stream.readers == 1
        stream.publish([encode("a"), encode("b")])
        await asyncio.sleep(0.05)  # quiet for longer than the keep-alive interval
        assert written[0].count(b"data: ") == 2 and b": ping" in b"".join(written[1:])
        accept = False
        stream.publish([encode("c")])
        stream.publish([encode("d")])
        assert behind == [True]  # once: from then on a task reads it
        stream.finish()
        events = list(SSEDecoder().iter([await _collect(reader)]))
        assert [e.data for e in events] == ["c", "d"]  # from where it stood, nothing twice
        assert stream.readers == 0

        other = hub.create(None, "openai")
        gone = other.read(0, keepalive=30)
        gone.follow(sink, lambda: behind.append(True))
        gone.close()  # its client went away while the stream is still being produced
        assert other.readers == 0 and other._grace_timer is not None
        assert behind == [True]
        await gone.aclose()  # what the response does at its end: nothing more
        assert other.readers == 0

    asyncio.run(run())
