"""The pure parts behind the rest of the OpenAI surface, as properties: the legacy
``text_completion`` codecs (encoder -> decoder gives the text back; the passthrough
forwards every frame as one event with only ``model`` rewritten and keeps the usage
chunk from a client that did not ask), ``local/embed``'s vectors, the base64 wire and
the embeddings request check."""

from __future__ import annotations

import base64
import json
import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenrelay.config import ConfigError, parse
from tokenrelay.embeddings import as_base64
from tokenrelay.events import ChatRequest, Event, Finish, GatewayError, Start, TextDelta, Usage
from tokenrelay.fake.extras import completions
from tokenrelay.fold import Fold, Tally
from tokenrelay.protocols.completions import codec
from tokenrelay.protocols.openai import embeddings
from tokenrelay.providers.local import embed_text
from tokenrelay.sse import SSEDataDecoder, SSEDecoder

TEXT = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=10)


def _request(include_usage: bool) -> ChatRequest:
    body: dict[str, Any] = {"model": "m", "prompt": "p", "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return codec.decode_request(body)


@settings(max_examples=40, deadline=None)
@given(texts=st.lists(TEXT, max_size=8), usage=st.booleans())
def test_encoded_text_completion_decodes_to_the_same_text(texts: list[str], usage: bool) -> None:
    request = codec.decode_request({"model": "m", "prompt": "p", "stream_options": {}})
    request.include_usage = usage
    encoder = codec.stream_encoder(request, "client-name", Tally())
    events: list[Event] = [Start("cmpl-1", "up", 1), *(TextDelta(t) for t in texts)]
    written = encoder.encode([*events, Finish("length"), Usage(input=3, output=len(texts))])
    written += encoder.close()
    decoder = codec.stream_decoder()
    fold = Fold()
    for item in written:
        (frame,) = SSEDecoder().feed(item)
        fold.extend(decoder.feed(frame))
    assert decoder.done and decoder.close() == []
    choice = fold.ordered_choices()[0]
    assert choice.text == "".join(texts) and choice.finish_reason == "length"
    assert (fold.usage is not None) == usage
    body = codec.encode_response(fold, "client-name")
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "".join(texts)


@pytest.mark.parametrize("include_usage", [True, False])
@settings(max_examples=20, deadline=None)
@given(prompt=st.lists(st.sampled_from(["a", "bb", "ççç", "d"]), min_size=1, max_size=6))
def test_the_passthrough_forwards_each_frame_as_one_event(
    include_usage: bool, prompt: list[str]
) -> None:
    upstream = completions(
        {
            "model": "up",
            "prompt": " ".join(prompt),
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        "cmpl-x",
    )
    assert upstream.stream is not None
    tally = Tally()
    request = _request(include_usage)
    passthrough = codec.passthrough(request, "client-name", tally)
    written: list[bytes] = []
    for event in upstream.stream.events:
        written += passthrough.encode(SSEDataDecoder().feed(event))
    written += passthrough.close()
    datas = []
    for item in written:
        frames = SSEDecoder().feed(item)
        assert len(frames) == 1
        datas.append(frames[0].data)
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    assert {c["model"] for c in chunks} == {"client-name"}
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == " ".join(prompt)
    assert any(not c["choices"] for c in chunks) == include_usage
    assert tally.usage is not None and tally.usage.output == len(prompt)
    assert tally.finish_reason == "stop"


def test_a_prompt_of_tokens_goes_on_but_is_not_translated() -> None:
    request = codec.decode_request({"model": "m", "prompt": [1, 2, 3]})
    assert request.source is not None
    with pytest.raises(GatewayError) as caught:
        request.source.check_translatable()
    assert caught.value.param == "prompt"
    body = codec.encode_request(request, "up")
    assert body["prompt"] == [1, 2, 3] and body["model"] == "up" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=60), dimensions=st.integers(1, 512))
def test_local_embed_is_deterministic_and_unit_length(text: str, dimensions: int) -> None:
    vector = embed_text(text, dimensions)
    assert len(vector) == dimensions and vector == embed_text(text, dimensions)
    norm = math.fsum(x * x for x in vector)
    assert norm == pytest.approx(1.0) or (norm == 0 and not text.split())
    assert embed_text("  ".join(text.split()) + "\n", dimensions) == vector  # words, not spacing


def test_shared_words_point_the_same_way() -> None:
    def cosine(a: str, b: str) -> float:
        return sum(x * y for x, y in zip(embed_text(a), embed_text(b), strict=True))

    assert cosine("the cat sat on the mat", "a cat on a mat") > cosine(
        "the cat sat on the mat", "quantum chromodynamics lectures"
    )


@given(st.lists(st.floats(-1, 1, width=32), max_size=64))
def test_base64_is_little_endian_float32(vector: list[float]) -> None:
    packed = base64.b64decode(as_base64(vector))
    assert list(struct.unpack(f"<{len(vector)}f", packed)) == vector


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "m", "input": "x", "dimensions": True}, "dimensions"),
        ({"model": "m", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_the_embeddings_door_names_the_field(body: dict[str, object], param: str) -> None:
    with pytest.raises(GatewayError) as caught:
        embeddings.decode_request(body)
    assert caught.value.status == 400 and caught.value.param == param


def test_token_inputs_pass_but_need_an_upstream_that_reads_them() -> None:
    request = embeddings.decode_request({"model": "m", "input": [[1, 2], [3]]})
    assert request.inputs is None
    with pytest.raises(GatewayError):
        request.texts()
    assert json.loads(embeddings.encode_request(request, "up"))["input"] == [[1, 2], [3]]


def test_a_provider_endpoint_name_is_checked() -> None:
    provider = {"name": "p", "base_url": "http://127.0.0.1:1/v1", "endpoints": ["chat", "images"]}
    with pytest.raises(ConfigError, match=r"providers\[0\]\.endpoints: 'images'"):
        parse({"providers": [provider]}, env={})
    provider["endpoints"] = ["completions"]
    assert parse({"providers": [provider]}, env={}).providers[0].endpoints == ["completions"]
