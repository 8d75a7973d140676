"""The frames a stream keeps (streams/frames.py): whatever mix of adding, compressing,
packing and trimming, every frame after any kept position comes back exactly, and the
byte count is the bytes actually held."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenrelay.streams.frames import BLOCK, RAW, Frames

ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.binary(min_size=1, max_size=300)),
        st.tuples(st.just("pack"), st.none()),
        st.tuples(st.just("trim"), st.integers(0, 20_000)),
    ),
    max_size=300,
)


def held(frames: Frames) -> int:
    blocks = sum(len(data) + ends.itemsize * len(ends) for data, ends in frames._blocks)
    return blocks + sum(len(f) for f in frames.live)


@settings(max_examples=200, deadline=None)
@given(ops=ops, data=st.data())
def test_every_kept_frame_comes_back_exactly(
    ops: list[tuple[str, object]], data: st.DataObject
) -> None:
    frames = Frames()
    sent: list[bytes] = []
    for op, arg in ops:
        if op == "add":
            assert isinstance(arg, bytes)
            frames.add(arg)
            frames.compact()
            sent.append(arg)
        elif op == "pack":
            frames.pack()
        elif frames.live:  # trimming happens on a live stream, after a frame is added
            assert isinstance(arg, int)
            frames.trim(arg)
            assert frames.nbytes <= arg or frames.last - frames.base == 1
        assert len(frames.live) < BLOCK + RAW or not frames.live
        assert frames.nbytes == held(frames)
        assert frames.last == len(sent)
    seq = data.draw(st.integers(frames.base, frames.last))
    assert frames.after(seq) == b"".join(sent[seq:])
    freed = frames.clear()
    assert freed >= 0 and frames.nbytes == 0 and frames.base == len(sent)
    assert frames.after(frames.last) == b""


def test_live_frames_are_compressed_in_blocks_keeping_the_newest_as_sent() -> None:
    frames = Frames()
    sent = [
        b'id: st_abc:%d\ndata: {"id":"chatcmpl-1","object":"chat.completion.chunk","model":"m",'
        b'"choices":[{"index":0,"delta":{"content":"token %d"}}]}\n\n' % (i, i)
        for i in range(1, 201)
    ]
    for frame in sent:
        frames.add(frame)
        frames.compact()
    assert RAW <= len(frames.live) < BLOCK + RAW
    assert frames.live == sent[-len(frames.live) :]
    assert frames.nbytes < 0.3 * sum(map(len, sent))
    assert frames.after(37) == b"".join(sent[37:])
