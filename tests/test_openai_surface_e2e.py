"""The rest of the OpenAI surface apps call, through a real gateway process with the
official ``openai`` SDK as the client: ``models.retrieve`` (ids with slashes, 404 in
OpenAI's shape), ``embeddings.create`` (float and base64, ``dimensions``) on the
built-in ``local/embed``, passed through to an OpenAI-compatible upstream and
translated to a Gemini upstream's ``batchEmbedContents``, and the legacy
``completions.create`` streamed and not, on ``local/echo`` and the fake upstream; each
with its usage row and cost read back from the database."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway
from support.usage_rows import wait_for_rows

from tokenrelay.fake.extras import vector
from tokenrelay.fold import CHARS_PER_TOKEN
from tokenrelay.providers.local import embed_text

pytestmark = pytest.mark.timeout(120)

PRICES = {
    "embed": {"input": 0.02, "output": 0.0},  # local/embed (the deployment's model)
    "emb-fake": {"input": 0.1, "output": 0.0},
    "echo": {"input": 1.0, "output": 2.0},
}


@pytest.fixture(scope="module")
def gw(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    config = gateway_config(fake, prices=PRICES, usage={"flush_interval": 0.1})
    config["providers"].append(
        {
            "name": "chatonly",
            "protocol": "openai",
            "base_url": f"{fake.base_url}/v1",
            "models": ["*"],
            "endpoints": ["chat"],
        }
    )
    gateway = start_gateway(workdir, config)
    yield gateway
    gateway.proc.stop()


@pytest.fixture
def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="open-mode", max_retries=0, timeout=20)


def flat(vectors: Iterable[list[float]]) -> list[float]:
    return [x for v in vectors for x in v]


def cost(price: float, tokens: int) -> float:
    return price * tokens / 1e6


# --- models.retrieve ------------------------------------------------------------------


def test_models_retrieve_an_id_with_slashes(client: openai.OpenAI) -> None:
    listed = {m.id for m in client.models.list()}
    assert {"local/echo", "local/embed", "fake/gen/5"} <= listed
    for name in ("local/echo", "local/embed", "fake/gen/5"):
        model = client.models.retrieve(name)
        assert (model.id, model.object) == (name, "model")
    assert client.models.retrieve("fake/gen/5").owned_by == "fake"


def test_models_retrieve_unknown_is_a_404_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("local/nope")
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "model_not_found"
    assert "local/nope" in body["message"] and body["type"] == "invalid_request_error"


# --- embeddings -------------------------------------------------------------------------


def test_local_embed_float_and_base64_are_the_documented_vectors(
    client: openai.OpenAI, gw: Gateway
) -> None:
    texts = ["the cat sat on the mat", "a dog"]
    floats = client.embeddings.create(model="local/embed", input=texts, encoding_format="float")
    b64 = client.embeddings.create(model="local/embed", input=texts)  # the SDK asks base64
    assert [len(d.embedding) for d in floats.data] == [256, 256]
    for got, text in zip(floats.data, texts, strict=True):
        assert got.embedding == pytest.approx(embed_text(text))
        assert math.fsum(x * x for x in got.embedding) == pytest.approx(1.0)
    for f, b in zip(floats.data, b64.data, strict=True):
        assert b.embedding == pytest.approx(f.embedding, abs=1e-6)  # float32 on the wire
    assert floats.model == "local/embed" and floats.usage.prompt_tokens == 8
    short = client.embeddings.create(model="local/embed", input="the cat", dimensions=32)
    assert len(short.data[0].embedding) == 32
    same = client.embeddings.create(model="local/embed", input="the cat", dimensions=32)
    assert same.data[0].embedding == short.data[0].embedding  # deterministic
    wire = client.embeddings.create(model="local/embed", input="the cat", encoding_format="base64")
    packed = base64.b64decode(str(wire.data[0].embedding))  # asked for: left to the caller
    unpacked = struct.unpack(f"<{len(packed) // 4}f", packed)
    assert list(unpacked) == pytest.approx(embed_text("the cat"), abs=1e-6)

    raw = client.embeddings.with_raw_response.create(model="local/embed", input="one two three")
    rid = raw.headers["x-request-id"]
    row = wait_for_rows(gw.config["database_url"], {rid})[rid]
    assert (row["model"], row["deployment"], row["input_tokens"]) == (
        "local/embed",
        "local/embed",
        3,
    )
    assert row["output_tokens"] == 0 and row["outcome"] == "ok"
    assert row["cost_usd"] == pytest.approx(cost(0.02, 3))


def test_embeddings_pass_through_to_an_openai_upstream(
    client: openai.OpenAI, gw: Gateway, fake: FakeUpstream
) -> None:
    fake.clear()
    texts = ["alpha beta", "gamma"]
    raw = client.embeddings.with_raw_response.create(
        model="fake/emb-fake", input=texts, dimensions=5, encoding_format="float", user="u1"
    )
    answer = raw.parse()
    assert answer.model == "fake/emb-fake"
    assert [d.embedding for d in answer.data] == [vector(t, 5) for t in texts]
    seen = fake.find("emb-fake")
    assert seen["path"] == "/v1/embeddings"
    assert seen["body"] == {
        "model": "emb-fake",
        "input": texts,
        "dimensions": 5,
        "encoding_format": "float",
        "user": "u1",
    }  # as the client wrote it, only the model rewritten
    b64 = client.embeddings.create(model="fake/emb-fake", input=texts, dimensions=5)
    assert fake.find("emb-fake")["body"]["encoding_format"] == "base64"
    assert flat(d.embedding for d in b64.data) == pytest.approx(flat(vector(t, 5) for t in texts))
    rid = raw.headers["x-request-id"]
    row = wait_for_rows(gw.config["database_url"], {rid})[rid]
    assert (row["deployment"], row["input_tokens"], row["estimated"]) == ("fake/emb-fake", 3, False)
    assert row["cost_usd"] == pytest.approx(cost(0.1, 3))


def test_embeddings_translated_to_gemini_batch_embed_contents(
    client: openai.OpenAI, gw: Gateway, fake: FakeUpstream
) -> None:
    fake.clear()
    texts = ["hello gemini", "second text here"]
    formats: list[dict[str, Any]] = [{"encoding_format": "float"}, {}]
    for fmt in formats:  # not given: the SDK asks base64, decodes it
        raw = client.embeddings.with_raw_response.create(
            model="fakegem/emb-fake", input=texts, dimensions=6, **fmt
        )
        answer = raw.parse()
        assert answer.model == "fakegem/emb-fake" and answer.object == "list"
        assert [d.index for d in answer.data] == [0, 1]
        assert flat(d.embedding for d in answer.data) == pytest.approx(
            flat(vector(t, 6) for t in texts), abs=1e-6
        )
    seen = fake.find("emb-fake")
    assert seen["path"] == "/v1beta/models/emb-fake:batchEmbedContents"
    assert seen["body"]["requests"][1] == {
        "model": "models/emb-fake",
        "outputDimensionality": 6,
        "content": {"parts": [{"text": "second text here"}]},
    }
    assert "key" not in seen["query"] and seen["headers"]["x-goog-api-key"]
    rid = raw.headers["x-request-id"]
    row = wait_for_rows(gw.config["database_url"], {rid})[rid]
    chars = sum(len(t) for t in texts)
    assert row["estimated"] is True  # Gemini counts nothing: the documented estimate
    assert row["input_tokens"] == pytest.approx(-(-chars // CHARS_PER_TOKEN), abs=1)
    assert row["cost_usd"] == pytest.approx(cost(0.1, row["input_tokens"]))


def test_embeddings_errors_are_openai_shaped(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="local/echo", input="x")
    assert caught.value.code == "endpoint_not_supported"
    with pytest.raises(openai.BadRequestError) as bad:
        client.embeddings.create(model="chatonly/emb-fake", input="x")
    assert bad.value.code == "endpoint_not_supported"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nowhere/x", input="x")
    with pytest.raises(openai.BadRequestError) as anthropic_upstream:
        client.embeddings.create(model="fakeant/emb", input="x")
    assert anthropic_upstream.value.code == "endpoint_not_supported"


# --- legacy completions ---------------------------------------------------------------


@pytest.mark.parametrize("model", ["local/echo", "fake/any-model"])
def test_completions_not_streamed(client: openai.OpenAI, gw: Gateway, model: str) -> None:
    raw = client.completions.with_raw_response.create(
        model=model, prompt="say these five words please", max_tokens=50
    )
    answer = raw.parse()
    assert answer.object == "text_completion" and answer.model == model
    assert answer.choices[0].text == "say these five words please"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (5, 5)
    rid = raw.headers["x-request-id"]
    row = wait_for_rows(gw.config["database_url"], {rid})[rid]
    assert (row["input_tokens"], row["output_tokens"], row["finish_reason"]) == (5, 5, "stop")
    if model == "local/echo":
        assert row["cost_usd"] == pytest.approx(cost(1.0, 5) + cost(2.0, 5))


@pytest.mark.parametrize("model", ["local/echo", "fake/any-model"])
def test_completions_streamed(client: openai.OpenAI, gw: Gateway, model: str) -> None:
    stream = client.completions.create(
        model=model,
        prompt="one two three four",
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text.split() == ["one", "two", "three"]
    assert {c.object for c in chunks} == {"text_completion"}
    assert {c.model for c in chunks} == {model}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and finishes.count("length") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (4, 3)
    plain = list(client.completions.create(model=model, prompt="a b", stream=True))
    assert all(c.usage is None for c in plain)  # usage only when asked for


def test_completions_upstream_gets_the_body_as_written(
    client: openai.OpenAI, fake: FakeUpstream
) -> None:
    fake.clear()
    client.completions.create(model="fake/cmpl-x", prompt="hi there", suffix="!", echo=False)
    seen = fake.find("cmpl-x")
    assert seen["path"] == "/v1/completions"
    body = seen["body"]
    assert (body["prompt"], body["suffix"], body["echo"], body["stream"]) == (
        "hi there",
        "!",
        False,
        True,
    )


def test_completions_only_where_the_provider_lists_them(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="chatonly/x", prompt="hi")
    assert caught.value.code == "endpoint_not_supported"
    with pytest.raises(openai.BadRequestError) as other:
        client.completions.create(model="fakeant/x", prompt="hi")
    assert other.value.code == "endpoint_not_supported"


# --- the attempts and errors chat has ---------------------------------------------------


def test_embeddings_retry_like_chat_and_upstream_errors_come_verbatim(
    client: openai.OpenAI, fake: FakeUpstream
) -> None:
    fake.clear()
    model = "echo?status=503&fail_times=1"
    raw = client.embeddings.with_raw_response.create(model=f"fake/{model}", input="again")
    assert raw.headers["x-tokenrelay-attempts"] == "2"  # a 503, then the answer
    assert len(raw.parse().data[0].embedding) == 8
    assert [e["status"] for e in fake.log() if e["path"] == "/v1/embeddings"] == [503, 200]
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="fake/echo?status=400", input="x")
    assert "fake upstream failure (400)" in caught.value.message
    with pytest.raises(openai.BadRequestError) as gem:
        client.embeddings.create(model="fakegem/echo?status=400", input="x")
    assert "fake upstream failure (400)" in gem.value.message


def test_completions_retry_before_the_first_byte(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.clear()
    raw = client.completions.with_raw_response.create(
        model="fake/echo?status=429&fail_times=1", prompt="after a retry"
    )
    assert raw.headers["x-tokenrelay-attempts"] == "2"
    assert raw.parse().choices[0].text == "after a retry"
