"""The OpenAI passthrough on frame bytes (protocols/openai_passthrough.py): each frame
forwarded as the upstream wrote it but for ``model``, always as valid UTF-8 (invalid
bytes anywhere become U+FFFD, as decoding the frame to text would make them)."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenrelay.events import Error
from tokenrelay.fold import Tally
from tokenrelay.protocols.openai.passthrough import OpenAIPassthrough
from tokenrelay.sse import SSEDecoder
from tokenrelay.sse import encode as sse_encode

MODEL = re.compile(r'"model"\s*:\s*"(?:[^"\\]|\\.)*"')
TEXT = st.text(max_size=20)


def reference(payload: bytes, model: str) -> bytes:
    """The frame as a text decode, a regex on the text and an encode give it."""
    text = payload.decode("utf-8", "replace")
    value = '"model":' + msgspec.json.encode(model).decode()
    return sse_encode(MODEL.sub(lambda _: value, text, count=1))


chunks = st.fixed_dictionaries(
    {
        "id": TEXT,
        "object": st.just("chat.completion.chunk"),
        "model": TEXT,
        "choices": st.lists(
            st.fixed_dictionaries(
                {
                    "index": st.integers(0, 3),
                    "delta": st.fixed_dictionaries({}, optional={"content": TEXT}),
                    "finish_reason": st.sampled_from([None, "stop", "length"]),
                }
            ),
            max_size=2,
        ),
    },
    optional={"system_fingerprint": TEXT, "obfuscation": TEXT},
)


def frame(chunk: dict[str, Any], spaced: bool, garbage: bytes) -> bytes:
    payload = json.dumps(chunk, ensure_ascii=False, separators=(", ", ": ") if spaced else None)
    raw = payload.encode()
    if garbage:  # invalid UTF-8 inside a string: the id's, or one the view skips
        field = b'"system_fingerprint":' if "system_fingerprint" in chunk else b'"id":'
        at = raw.index(b'"', raw.index(field) + len(field)) + 1
        raw = raw[:at] + garbage + raw[at:]
    return raw


GARBAGE = st.sampled_from([b"", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf0\x9f"])


@settings(max_examples=300, deadline=None)
@given(
    frames=st.lists(st.tuples(chunks, st.booleans(), GARBAGE), min_size=1, max_size=4),
    same_model=st.booleans(),
    model=TEXT,
)
def test_frames_are_forwarded_as_written_but_for_the_model(
    frames: list[tuple[dict[str, Any], bool, bytes]], same_model: bool, model: str
) -> None:
    """Several frames of one stream (the upstream's model text is the same in each, or
    not): each as a text decode, a regex and an encode would give it."""
    if same_model:
        for chunk, _, _ in frames:
            chunk["model"] = frames[0][0]["model"]
    raws = [frame(*f) for f in frames]
    relay = OpenAIPassthrough(model, include_usage=True, tally=Tally())
    out = relay.encode(raws)
    assert out == [reference(raw, model) for raw in raws]
    for piece in out:
        piece.decode("utf-8")  # always valid UTF-8
        [event] = SSEDecoder().feed(piece)
        assert json.loads(event.data)["model"] == model


def test_usage_only_and_malformed_frames() -> None:
    tally = Tally()
    relay = OpenAIPassthrough("alias", include_usage=False, tally=tally)
    usage = b'{"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}'
    assert relay.encode([usage]) == []  # asked for on the gateway's account, not the client's
    assert tally.usage is not None and tally.usage.output == 4
    [error] = relay.encode([b"{not json"])
    assert b'"error"' in error and relay.ended


CHUNK = b'{"id":"c1","created":1,"model":"up","choices":[{"index":0,"delta":{"content":"hi"}}]}'
STOP = b'{"id":"c1","model":"up","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'


def test_done_goes_out_with_the_upstreams_and_nothing_after_it() -> None:
    """The client's [DONE] leaves with the read that brought the upstream's (after the
    usage it asked for, estimated here); the rest of the upstream's body, the end and
    a later failure add nothing."""
    tally = Tally()
    relay = OpenAIPassthrough("alias", include_usage=True, tally=tally)
    out = relay.encode([CHUNK, STOP, b"[DONE]", CHUNK])
    assert len(out) == 4 and out[-1] == b"data: [DONE]\n\n"
    assert b'"usage"' in out[-2] and not relay.ended  # the upstream's body is still read
    assert relay.encode([CHUNK]) == []
    assert relay.fail(Error("upstream", "lost")) == [] and relay.close() == []
    assert tally.error is None and tally.finish_reason == "stop"


def test_a_body_that_just_stops_ends_with_an_error_frame() -> None:
    relay = OpenAIPassthrough("alias", include_usage=False, tally=Tally())
    assert len(relay.encode([CHUNK])) == 1
    [frame] = relay.close()  # no finish_reason, no [DONE]: cut off
    assert json.loads(frame[6:])["error"]["code"] == "upstream_truncated"
    assert relay.ended and relay.close() == []
