"""The stream hub in process: every frame after any position, live or after the stream
finished (when its frames are kept compressed), exactly once and in order; byte
accounting that returns to zero."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

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
            # several events in one item too: the hub numbers each event
            stream.publish([b"".join(encode(text) for text in batch)])
            sent += batch
        live_after = data.draw(st.integers(0, len(sent)))
        live = stream.read(live_after, keepalive=30)
        stream.finish()
        hub.sweep(pack=True)  # what the timer does: finished frames kept compressed
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
