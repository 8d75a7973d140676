"""``CostStamp`` on each client protocol's frames: only the final usage frame gains
``cost`` (in its own usage object); every other frame is the very same bytes; nothing
changes when the model has no price."""

from __future__ import annotations

import json

import pytest

from tokenrelay.protocols.registry import REGISTRY
from tokenrelay.server.cost_stamp import CostStamp
from tokenrelay.sse import SSEDecoder
from tokenrelay.sse import encode as sse_encode


def frame(data: dict[str, object], event: str | None = None) -> bytes:
    return sse_encode(json.dumps(data), event=event)


CASES = {
    "openai": (
        [frame({"choices": [{"delta": {"content": "hi"}}], "usage": None})],
        frame({"choices": [], "usage": {"prompt_tokens": 3}}),
        ("usage",),
    ),
    "anthropic": (
        [frame({"type": "message_start", "message": {"usage": {}}}, "message_start")],
        frame({"type": "message_delta", "usage": {"output_tokens": 2}}, "message_delta"),
        ("usage",),
    ),
    "openai-responses": (
        [frame({"type": "response.output_text.delta", "delta": "x"}, "response.output_text.delta")],
        frame(
            {"type": "response.completed", "response": {"usage": {"input_tokens": 3}}},
            "response.completed",
        ),
        ("response", "usage"),
    ),
    "gemini": (
        [frame({"candidates": [{"content": {}}], "usageMetadata": {"promptTokenCount": 3}})],
        frame({"candidates": [{"finishReason": "STOP"}], "usageMetadata": {"totalTokenCount": 5}}),
        ("usageMetadata",),
    ),
}


@pytest.mark.parametrize("protocol", list(CASES))
def test_only_the_final_usage_frame_gets_the_cost(protocol: str) -> None:
    place = REGISTRY.get(protocol).cost
    assert place is not None
    others, final, path = CASES[protocol]
    stamp = CostStamp(place, lambda: 0.0012345678912)
    out = stamp([*others, final])
    assert all(a is b for a, b in zip(out, others, strict=False))  # untouched, unparsed
    [event] = SSEDecoder().feed(out[-1])
    [before] = SSEDecoder().feed(final)
    assert event.event == before.event
    usage = json.loads(event.data)
    for key in path:
        usage = usage[key]
    assert usage["cost"] == pytest.approx(0.001234568)
    unpriced = CostStamp(place, lambda: None)
    assert unpriced([final]) == [final]
