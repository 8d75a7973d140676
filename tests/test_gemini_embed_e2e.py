"""Embeddings through the Gemini client protocol, from the user's side: the official
``google-genai`` SDK's ``embed_content`` (one content and several; it calls
``models/{model}:batchEmbedContents``) and a raw ``:embedContent``, at a real gateway
process, on every upstream kind that embeds: the built-in ``local/embed``, an
OpenAI-compatible upstream (``/v1/embeddings`` of the fake) and a Gemini upstream
(``batchEmbedContents``, the client's requests passed through). Each with its usage
row and cost read back from the database, like ``/v1/embeddings``; errors in Google's
shape; an upstream's ``Retry-After`` kept on both client protocols."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import openai
import pytest
from google import genai
from google.genai import errors, types
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway
from support.usage_rows import wait_for_rows

from tokenrelay.fake.extras import DEFAULT_DIMENSIONS, vector
from tokenrelay.fold import CHARS_PER_TOKEN
from tokenrelay.providers.local import EMBED_DIMENSIONS, count_tokens, embed_text

pytestmark = pytest.mark.timeout(120)

PRICES = {
    "embed": {"input": 0.02, "output": 0.0},  # local/embed
    "emb-oa": {"input": 0.1, "output": 0.0},
    "emb-gem": {"input": 0.3, "output": 0.0},
}
UPSTREAMS = ["local/embed", "fake/emb-oa", "fakegem/emb-gem"]
IDS = ["local", "openai-upstream", "gemini-upstream"]


@pytest.fixture(scope="module")
def gw(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    config = gateway_config(fake, prices=PRICES, usage={"flush_interval": 0.1})
    gateway = start_gateway(workdir, config)
    yield gateway
    gateway.proc.stop()


@pytest.fixture
def gc(gw: Gateway) -> Iterator[genai.Client]:
    options = types.HttpOptions(base_url=gw.url, api_version="v1beta", timeout=30_000)
    with genai.Client(api_key="dummy-key", http_options=options) as client:
        yield client


def expected(model: str, text: str, dimensions: int | None) -> list[float]:
    """What each upstream's vector for ``text`` is (each has its documented default)."""
    if model.startswith("local/"):
        return embed_text(text, dimensions or EMBED_DIMENSIONS)
    return vector(text, dimensions or DEFAULT_DIMENSIONS)


def tokens(model: str, texts: list[str]) -> tuple[int, bool]:
    """(input tokens charged, estimated): a word a token where the upstream counts (the
    local model, the fake's OpenAI route), the documented estimate where Gemini counts
    nothing."""
    if model.startswith("fakegem/"):
        return sum(-(-len(t) // CHARS_PER_TOKEN) for t in texts), True
    return sum(count_tokens(t) for t in texts), False


def row_of(gw: Gateway, request_id: str) -> dict[str, Any]:
    return wait_for_rows(gw.config["database_url"], {request_id})[request_id]


@pytest.mark.parametrize("model", UPSTREAMS, ids=IDS)
def test_embed_content_one_and_several(gc: genai.Client, gw: Gateway, model: str) -> None:
    one = gc.models.embed_content(model=model, contents="the cat sat on the mat")
    assert one.embeddings is not None and len(one.embeddings) == 1
    assert one.embeddings[0].values == pytest.approx(
        expected(model, "the cat sat on the mat", None)
    )

    texts = ["alpha beta gamma", "delta", "epsilon zeta"]
    several = gc.models.embed_content(
        model=model, contents=texts, config=types.EmbedContentConfig(output_dimensionality=6)
    )
    assert several.embeddings is not None
    got = [e.values for e in several.embeddings]
    assert got == [pytest.approx(expected(model, t, 6)) for t in texts]

    http = several.sdk_http_response
    assert http is not None and http.headers is not None
    row = row_of(gw, http.headers["x-request-id"])
    charged, estimated = tokens(model, texts)
    assert (row["model"], row["deployment"], row["outcome"]) == (model, model, "ok")
    assert (row["input_tokens"], row["output_tokens"], row["estimated"]) == (charged, 0, estimated)
    price = PRICES[model.split("/", 1)[1]]["input"]
    assert row["cost_usd"] == pytest.approx(price * charged / 1e6)


@pytest.mark.parametrize("model", UPSTREAMS, ids=IDS)
def test_embed_content_route_for_one_content(gw: Gateway, model: str) -> None:
    body = {
        "content": {"parts": [{"text": "one "}, {"text": "content"}]},
        "outputDimensionality": 4,
    }
    r = httpx.post(
        f"{gw.url}/v1beta/models/{model}:embedContent",
        json=body,
        headers={"x-goog-api-key": "dummy-key"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"embedding"}
    assert r.json()["embedding"]["values"] == pytest.approx(expected(model, "one content", 4))
    row = row_of(gw, r.headers["x-request-id"])
    assert row["input_tokens"] == tokens(model, ["one content"])[0]


def test_a_gemini_upstream_gets_the_requests_as_written(
    gc: genai.Client, fake: FakeUpstream
) -> None:
    fake.clear()
    config = types.EmbedContentConfig(task_type="RETRIEVAL_DOCUMENT", title="a doc")
    gc.models.embed_content(model="fakegem/emb-gem", contents=["first", "second"], config=config)
    seen = [e for e in fake.log() if e["path"].endswith(":batchEmbedContents")][-1]
    assert seen["path"] == "/v1beta/models/emb-gem:batchEmbedContents"
    assert seen["body"]["requests"][1] == {
        "model": "models/emb-gem",  # rewritten from models/fakegem/emb-gem
        "content": {"parts": [{"text": "second"}], "role": "user"},
        "taskType": "RETRIEVAL_DOCUMENT",
        "title": "a doc",
    }


def test_an_openai_upstream_gets_the_texts_as_input(gc: genai.Client, fake: FakeUpstream) -> None:
    fake.clear()
    config = types.EmbedContentConfig(output_dimensionality=5)
    gc.models.embed_content(model="fake/emb-oa", contents=["first", "second"], config=config)
    assert fake.find("emb-oa")["body"] == {
        "model": "emb-oa",
        "input": ["first", "second"],
        "encoding_format": "float",
        "dimensions": 5,
    }


def test_errors_are_google_shaped(gc: genai.Client, gw: Gateway) -> None:
    for model in ("local/echo", "fakeant/emb"):  # models that do not embed
        with pytest.raises(errors.ClientError) as caught:
            gc.models.embed_content(model=model, contents="x")
        assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
    with pytest.raises(errors.ClientError) as missing:
        gc.models.embed_content(model="nowhere/x", contents="x")
    assert missing.value.code == 404 and missing.value.status == "NOT_FOUND"
    r = httpx.post(
        f"{gw.url}/v1beta/models/local/embed:batchEmbedContents", json={"requests": []}, timeout=30
    )
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    image = {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}
    r = httpx.post(
        f"{gw.url}/v1beta/models/local/embed:embedContent",
        json={"content": {"parts": [image]}},
        timeout=30,
    )
    assert r.status_code == 400 and "text only" in r.json()["error"]["message"]


def test_an_upstreams_retry_after_reaches_both_client_protocols(gw: Gateway) -> None:
    model = "fake/echo?status=429&retry_after=7"
    client = openai.OpenAI(base_url=gw.base_url, api_key="open-mode", max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        client.embeddings.create(model=model, input="x")
    assert caught.value.response.headers["retry-after"] == "7"
    r = httpx.post(
        f"{gw.url}/v1beta/models/{quote(model, safe='/')}:batchEmbedContents",
        json={"requests": [{"content": {"parts": [{"text": "x"}]}}]},
        timeout=30,
    )
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json()["error"]["status"] == "RESOURCE_EXHAUSTED"


@pytest.mark.parametrize("model", ["fake/emb-oa", "fakegem/emb-gem"], ids=IDS[1:])
def test_an_answer_larger_than_an_error_body_arrives_whole(gw: Gateway, model: str) -> None:
    texts = [f"text number {i}" for i in range(40)]  # 40 x 1024 floats: about 800 kB of JSON
    client = openai.OpenAI(base_url=gw.base_url, api_key="open-mode", max_retries=0)
    answer = client.embeddings.create(
        model=model, input=texts, dimensions=1024, encoding_format="float"
    )
    assert [d.embedding for d in answer.data] == [pytest.approx(vector(t, 1024)) for t in texts]
