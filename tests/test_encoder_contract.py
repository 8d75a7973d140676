"""The one contract of every client-side encoder and passthrough (protocols/base.py):
each item they return is exactly one whole SSE event, so the hub numbers items as they
come (one ``id:`` each) without parsing them. Checked for every client protocol in the
registry: a protocol added there is checked here without a line of this file changing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.paths import fixture_files, fixtures_dir

from tokenrelay.events import (
    ChatRequest,
    Error,
    Event,
    Finish,
    Message,
    ReasoningDelta,
    Start,
    TextDelta,
    TextPart,
    ToolCallDelta,
    Usage,
)
from tokenrelay.fold import Tally
from tokenrelay.protocols.base import ClientProtocol
from tokenrelay.protocols.registry import REGISTRY
from tokenrelay.sse import SSEDataDecoder, SSEDecoder, SSENamedDecoder

CLIENTS = [p.client for p in REGISTRY.clients() if p.client is not None]
IDS = [c.name for c in CLIENTS]
RECORDINGS = {p.name: p.recordings for p in REGISTRY.clients()}
RECORDED = [c for c in CLIENTS if RECORDINGS[c.name]]  # (no recordings of legacy completions)

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
EVENTS = st.one_of(
    st.builds(TextDelta, TEXT),
    st.builds(
        ReasoningDelta, TEXT, st.none() | st.just("sig"), st.none() | st.just("redacted-data")
    ),
    st.builds(
        ToolCallDelta,
        st.integers(0, 2),
        st.none() | st.sampled_from(["call_1", "call_2"]),
        st.none() | st.sampled_from(["get_weather", "lookup"]),
        TEXT,
    ),
    st.builds(Finish, st.sampled_from(["stop", "length", "tool_calls"])),
    st.builds(Usage, st.integers(0, 50), st.integers(0, 50)),
)
BATCHES = st.lists(st.lists(EVENTS, max_size=6), max_size=8)


def _request(stream: bool = True) -> ChatRequest:
    return ChatRequest("m", [Message("user", [TextPart("hi")])], stream=stream, include_usage=True)


def _one_event_each(items: list[bytes]) -> None:
    for item in items:
        assert item.endswith(b"\n\n"), item
        assert len(SSEDecoder().feed(item)) == 1, item


@pytest.mark.parametrize("codec", CLIENTS, ids=IDS)
@settings(max_examples=200, deadline=None)
@given(batches=BATCHES, cancelled=st.booleans(), error=st.booleans())
def test_every_encoder_item_is_one_event(
    codec: ClientProtocol, batches: list[list[Event]], cancelled: bool, error: bool
) -> None:
    encoder = codec.stream_encoder(_request(), "m", Tally())
    written: list[bytes] = []
    for i, batch in enumerate(batches):
        events: list[Event] = [Start("id-1", "m"), *batch] if i == 0 else batch
        written += encoder.encode(events)
    written += encoder.fail(Error("upstream", "boom", 502)) if error else []
    written += encoder.close(cancelled)
    _one_event_each(written)
    assert written or not batches  # something was written for a stream that had events


@pytest.mark.parametrize("codec", RECORDED, ids=[c.name for c in RECORDED])
def test_every_passthrough_item_is_one_event(codec: ClientProtocol) -> None:
    files: list[Path] = [f for glob in RECORDINGS[codec.name] for f in fixture_files(glob)]
    if not files:
        fixtures_dir()  # skips (fails under CI=true) when ../shared is absent
        pytest.skip(f"no recorded {codec.name} streams")
    for path in files:
        passthrough = codec.passthrough(_request(), "m", Tally())
        body = path.read_bytes()
        # what Upstream gives each kind: data payloads, (name, data) bytes, or events
        decoder = (
            SSEDataDecoder()
            if passthrough.payloads
            else SSENamedDecoder()
            if getattr(passthrough, "named", False)
            else SSEDecoder()
        )
        frames: list[object] = list(decoder.iter([body]))
        written: list[bytes] = []
        for frame in frames:
            written += passthrough.encode([frame])
        written += passthrough.close()
        _one_event_each(written)
        assert written, path.name
