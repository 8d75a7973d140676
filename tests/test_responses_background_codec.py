"""The codecs' part of background mode, pure: a background response's events are numbered
0, 1, 2, ... (so that ``starting_after=N`` is the hub's frame N + 1) and carry the id
the client was given before the upstream was called; a stop ends it ``cancelled`` with
the items done. Over the recorded Responses streams with any upstream numbering (the
passthrough), and over random canonical streams (the encoder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.paths import fixture_files, fixtures_dir

from tokenrelay.events import ChatRequest, Finish, Message, Source, Start, TextDelta, TextPart
from tokenrelay.fold import Tally
from tokenrelay.protocols.responses import codec
from tokenrelay.protocols.responses.wire import name
from tokenrelay.sse import ServerSentEvent, SSEDecoder

FIXTURES = fixture_files("openai/responses_*.sse")
OURS = "resp_" + "ab" * 24


def request(background: bool = True) -> ChatRequest:
    body = {"model": "m", "input": "hi", "background": background}
    return ChatRequest("m", [Message("user", [TextPart("hi")])], source=Source(name, body))


def recorded(path: Path) -> list[ServerSentEvent]:
    fixtures_dir()  # skip (or fail under CI) without ../shared
    decoder = SSEDecoder()
    return decoder.feed(path.read_bytes()) + decoder.flush()


def renumbered(
    frames: list[ServerSentEvent], numbers: list[int]
) -> list[tuple[bytes | None, bytes]]:
    """The recording renumbered, as the passthrough reads it (``Upstream.named()``: each
    event's name and data as bytes)."""
    out = []
    for frame, n in zip(frames, numbers, strict=True):
        data = json.loads(frame.data)
        data["sequence_number"] = n
        event = frame.event.encode() if frame.event is not None else None
        out.append((event, json.dumps(data).encode()))
    return out


def events(out: list[bytes]) -> list[dict[str, Any]]:
    decoder = SSEDecoder()
    return [json.loads(e.data) for e in decoder.feed(b"".join(out)) + decoder.flush()]


def without_numbers_and_ids(event: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in event.items() if k != "sequence_number"}
    if isinstance(out.get("response"), dict):
        out["response"] = {
            k: v
            for k, v in out["response"].items()
            if k not in ("id", "model", "store", "background", "previous_response_id")
        }
    return out


@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_passthrough_numbers_from_zero_and_gives_the_gateways_id(
    path: Path, data: st.DataObject
) -> None:
    frames = recorded(path)
    start = data.draw(st.integers(0, 50))
    gaps = data.draw(st.lists(st.integers(1, 5), min_size=len(frames), max_size=len(frames)))
    numbers = [start + sum(gaps[:i]) for i in range(len(frames))]
    stop = data.draw(st.integers(1, len(frames)))  # a cancel after this many, or none
    tally = Tally(response_id=OURS)
    passthrough = codec.passthrough(request(), "client-model", tally)
    batches = renumbered(frames, numbers)[:stop]
    out = passthrough.encode(batches) + passthrough.close(cancelled=stop < len(frames))
    got = events(out)
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
    assert all(e["response"]["id"] == OURS for e in got if "response" in e)
    assert all(e["response"]["background"] is True for e in got if "response" in e)
    given_events = [json.loads(f.data) for f in frames[:stop]]
    assert [without_numbers_and_ids(e) for e in got[:stop]] == [
        without_numbers_and_ids(e) for e in given_events
    ]
    assert tally.final is not None and tally.final["id"] == OURS
    if stop < len(frames):  # stopped: the end the API can stream, status cancelled
        assert got[-1]["type"] == "response.incomplete" and len(got) == stop + 1
        assert tally.final["status"] == "cancelled"
        done = [e["item"] for e in given_events if e["type"] == "response.output_item.done"]
        assert tally.final["output"] == done and tally.final["usage"] is not None
    else:
        assert len(got) == len(frames)


def test_the_foreground_passthrough_keeps_the_upstreams_numbers_and_id() -> None:
    """Without a response id chosen beforehand nothing of this applies."""
    path = FIXTURES[0] if FIXTURES else Path("missing")
    frames = recorded(path)
    numbers = [7 + 2 * i for i in range(len(frames))]
    passthrough = codec.passthrough(request(False), "m", Tally())
    got = events(passthrough.encode(renumbered(frames, numbers)))
    assert [e["sequence_number"] for e in got] == numbers
    assert all(e["response"]["id"] != OURS for e in got if "response" in e)


@settings(max_examples=60, deadline=None)
@given(
    pieces=st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=12),
    batch=st.integers(1, 4),
    stop=st.integers(0, 13),
)
def test_the_encoder_numbers_from_zero_gives_the_id_and_ends_cancelled(
    pieces: list[str], batch: int, stop: int
) -> None:
    tally = Tally(response_id=OURS)
    encoder = codec.stream_encoder(request(), "m", tally)
    stream: list[Any] = [Start("up_1", "m"), *(TextDelta(p) for p in pieces)]
    cancelled = stop < len(pieces)
    if not cancelled:
        stream.append(Finish(0, "stop"))
    stream = stream[: stop + 1] if cancelled else stream
    out: list[bytes] = []
    for i in range(0, len(stream), batch):
        out += encoder.encode(stream[i : i + batch])
    out += encoder.close(cancelled=cancelled)
    got = events(out)
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
    assert all(e["response"]["id"] == OURS for e in got if "response" in e)
    assert got[0]["response"]["background"] is True
    text = "".join(e.get("delta", "") for e in got if e["type"] == "response.output_text.delta")
    assert text == "".join(pieces[:stop] if cancelled else pieces)
    assert tally.final is not None and tally.final["id"] == OURS
    assert tally.final["status"] == ("cancelled" if cancelled else "completed")
    assert got[-1]["type"] == ("response.incomplete" if cancelled else "response.completed")
