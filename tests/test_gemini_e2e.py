"""The Gemini client protocol from the user's side: the official ``google-genai`` SDK
(``http_options`` base URL at a real gateway process) on every upstream protocol of the
fake and on ``local/echo``; the recorded Gemini streams through the Gemini client
protocol byte for byte (a Gemini client on a Gemini upstream is a passthrough); the
JSON-array stream (no ``alt=sse``); ``x-goog-api-key`` and ``?key=`` as the gateway
key; errors in Google's shape.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors, types
from support.paths import fixture_files, fixtures_dir
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway

from tokenrelay.sse import SSEDataDecoder

pytestmark = pytest.mark.timeout(60)

MODELS = ["local/echo", "fake/echo", "fakeant/echo", "fakegem/echo", "fakeresp/echo"]
TOOL_MODELS = ["local/echo", "fake/tools", "fakeant/tools", "fakegem/tools", "fakeresp/tools"]
IDS = ["local", "openai-upstream", "anthropic-upstream", "gemini-upstream", "responses-upstream"]
MASTER = "sk-master-gemini-test"
GEMINI_RECORDINGS = fixture_files("gemini/*.sse")


def client_for(gateway: Gateway, key: str = "dummy-key", version: str = "v1") -> genai.Client:
    """The SDK at the gateway; ``v1`` is its default API version, Gemini CLI's is
    ``v1beta``: both are served."""
    options = types.HttpOptions(base_url=gateway.url, api_version=version, timeout=30_000)
    return genai.Client(api_key=key, http_options=options)


@pytest.fixture(scope="module")
def gc(gateway: Gateway) -> Iterator[genai.Client]:
    with client_for(gateway) as client:
        yield client


@pytest.mark.parametrize("model", MODELS, ids=IDS)
def test_generate_content(gc: genai.Client, model: str) -> None:
    prompt = "hello there, gemini client"
    response = gc.models.generate_content(model=model, contents=prompt)
    assert response.text == prompt
    assert response.candidates and response.candidates[0].finish_reason == types.FinishReason.STOP
    usage = response.usage_metadata
    assert usage is not None
    assert usage.prompt_token_count == 4 and usage.candidates_token_count == 4
    assert response.model_version == model


@pytest.mark.parametrize("model", MODELS, ids=IDS)
def test_generate_content_stream(gc: genai.Client, model: str) -> None:
    prompt = "a streamed answer in several words"
    chunks = list(
        gc.models.generate_content_stream(
            model=model,
            contents=prompt,
            config=types.GenerateContentConfig(system_instruction="be brief"),
        )
    )
    assert "".join(c.text or "" for c in chunks) == prompt
    assert len(chunks) >= 2  # streamed, not one body
    last = chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata is not None
    assert last.usage_metadata.candidates_token_count == len(prompt.split())
    assert {c.model_version for c in chunks} == {model}


WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Current weather in a city",
    parameters_json_schema={
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
)


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "create"])
@pytest.mark.parametrize("model", TOOL_MODELS, ids=IDS)
def test_function_calling_round_trip(gc: genai.Client, model: str, streamed: bool) -> None:
    """The model calls ``get_weather`` (``/call``); the call comes back whole with its
    arguments; the function's result sent on the next turn reaches the upstream (and
    local/echo echoes it)."""
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    ask = types.Content(role="user", parts=[types.Part(text='/call get_weather {"city": "Paris"}')])
    if streamed:
        chunks = list(gc.models.generate_content_stream(model=model, contents=[ask], config=config))
        calls = [c for chunk in chunks for c in chunk.function_calls or []]
        last = chunks[-1]
    else:
        last = gc.models.generate_content(model=model, contents=[ask], config=config)
        calls = list(last.function_calls or [])
    assert [(c.name, c.args) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert last.candidates and last.candidates[0].finish_reason == types.FinishReason.STOP
    if not model.startswith("local/"):
        return
    call_turn = last.candidates[0].content if not streamed else None
    if call_turn is None:
        call_turn = types.Content(role="model", parts=[types.Part(function_call=calls[0])])
    result = types.Part.from_function_response(
        name="get_weather", response={"output": "sunny, 21 degrees"}
    )
    follow = gc.models.generate_content(
        model=model,
        contents=[ask, call_turn, types.Content(role="user", parts=[result])],
        config=config,
    )
    assert "sunny, 21 degrees" in (follow.text or "")


def test_function_result_reaches_a_gemini_upstream_as_written(
    gc: genai.Client, fake: FakeUpstream
) -> None:
    """Same protocol: the body the SDK wrote (functionResponse, thought signature on
    the call) reaches the Gemini upstream unchanged."""
    call = types.Part(
        function_call=types.FunctionCall(name="get_weather", args={"city": "Paris"}),
        thought_signature=b"opaque-signature",
    )
    result = types.Part.from_function_response(name="get_weather", response={"output": "sunny"})
    fake.clear()
    gc.models.generate_content(
        model="fakegem/echo",
        contents=[
            types.Content(role="user", parts=[types.Part(text="weather?")]),
            types.Content(role="model", parts=[call]),
            types.Content(role="user", parts=[result, types.Part(text="and now?")]),
        ],
        config=types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER])]),
    )
    body = fake.find("echo")["body"]
    model_turn = body["contents"][1]["parts"][0]
    assert model_turn["functionCall"] == {"name": "get_weather", "args": {"city": "Paris"}}
    assert model_turn["thoughtSignature"] == "b3BhcXVlLXNpZ25hdHVyZQ=="
    assert body["contents"][2]["parts"][0]["functionResponse"]["response"] == {"output": "sunny"}


@pytest.mark.parametrize("model", MODELS, ids=IDS)
def test_count_tokens(gc: genai.Client, model: str) -> None:
    counted = gc.models.count_tokens(model=model, contents="count these five words")
    assert counted.total_tokens is not None and counted.total_tokens >= 4


def test_count_tokens_says_where_the_count_came_from(gateway: Gateway) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "count these five words"}]}]}
    expected = {
        "local/echo": ("local", 4),
        "fake/echo": ("estimate", None),
        "fakeant/echo": ("upstream", 4),
        "fakegem/echo": ("upstream", 4),
        "fakeresp/echo": ("estimate", None),
    }
    for model, (source, count) in expected.items():
        r = httpx.post(f"{gateway.url}/v1beta/models/{model}:countTokens", json=body)
        assert r.status_code == 200, r.text
        assert r.headers["x-tokenrelay-count"] == source
        if count is not None:
            assert r.json()["totalTokens"] == count


def test_models_list_and_get(gateway: Gateway) -> None:
    """``/v1beta/models`` (``/v1/models`` is the OpenAI list)."""
    gc = client_for(gateway, version="v1beta")
    names = [m.name for m in gc.models.list()]
    assert "models/local/echo" in names
    model = gc.models.get(model="local/echo")
    assert model.name == "models/local/echo"
    assert "streamGenerateContent" in (model.supported_actions or [])
    with pytest.raises(errors.ClientError) as caught:
        gc.models.get(model="no/such-model")
    assert caught.value.code == 404 and caught.value.status == "NOT_FOUND"


def test_an_unknown_model_is_a_google_shaped_404(gc: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as caught:
        gc.models.generate_content(model="nobody/none", contents="hi")
    assert caught.value.code == 404 and caught.value.status == "NOT_FOUND"


# --- recordings through the Gemini client protocol: a passthrough ---------------------

_MODEL_VERSION = re.compile(rb'("modelVersion"\s*:\s*)"(?:[^"\\]|\\.)*"')


def _payloads(raw: bytes) -> list[bytes]:
    decoder = SSEDataDecoder()
    return [p for p in decoder.feed(raw) + decoder.flush() if p.strip()]


@pytest.mark.parametrize("path", GEMINI_RECORDINGS, ids=lambda p: p.stem)
def test_recording_reaches_a_gemini_client_as_recorded(gateway: Gateway, path: Path) -> None:
    """Every chunk as the upstream wrote it (spacing, field order, thought signatures,
    usageMetadata, fields the canon does not know), only ``modelVersion`` rewritten to
    the name the client asked for."""
    fixtures_dir()
    model = f"fakegem/replay/gemini/{path.stem}"
    name = json.dumps(model).encode()
    expected = [
        _MODEL_VERSION.sub(lambda m: m.group(1) + name, p, count=1)
        for p in _payloads(path.read_bytes())
    ]
    url = f"{gateway.url}/v1beta/models/{model}:streamGenerateContent?alt=sse"
    body = {"contents": [{"role": "user", "parts": [{"text": "replay"}]}]}
    with httpx.stream("POST", url, json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        got = _payloads(r.read())
    assert got == expected
    # without alt=sse: the same chunks as one JSON array
    r = httpx.post(url.removesuffix("?alt=sse"), json=body, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == [json.loads(p) for p in expected]


@pytest.mark.parametrize("path", GEMINI_RECORDINGS, ids=lambda p: p.stem)
def test_recording_through_the_sdk(gc: genai.Client, path: Path) -> None:
    fixtures_dir()
    recorded = [json.loads(p) for p in _payloads(path.read_bytes())]
    parts = [
        part
        for chunk in recorded
        for c in chunk.get("candidates", [])
        for part in c.get("content", {}).get("parts", [])
    ]
    texts = "".join(p["text"] for p in parts if "text" in p and not p.get("thought"))
    calls = [p["functionCall"]["name"] for p in parts if "functionCall" in p]
    model = f"fakegem/replay/gemini/{path.stem}"
    chunks = list(gc.models.generate_content_stream(model=model, contents="replay"))
    got_parts = [
        p for c in chunks for cand in c.candidates or [] for p in (cand.content.parts or [])
    ]
    assert "".join(p.text or "" for p in got_parts if not p.thought) == texts
    assert [p.function_call.name for p in got_parts if p.function_call] == calls
    signatures = [p["thoughtSignature"] for p in parts if "thoughtSignature" in p]
    got_signatures = [p.thought_signature for p in got_parts if p.thought_signature]
    assert len(got_signatures) == len(signatures)


# --- the gateway key in x-goog-api-key or ?key= -------------------------------------------


@pytest.fixture(scope="module")
def locked(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    gw = start_gateway(workdir, gateway_config(fake, master_key=MASTER))
    yield gw
    gw.proc.stop()


def test_x_goog_api_key_and_query_key_are_the_gateway_key(locked: Gateway) -> None:
    with client_for(locked, MASTER) as client:  # the SDK sends x-goog-api-key
        assert client.models.generate_content(model="local/echo", contents="hi").text == "hi"
    with client_for(locked, "sk-wrong") as client:
        with pytest.raises(errors.ClientError) as caught:
            client.models.generate_content(model="local/echo", contents="hi")
        assert caught.value.code == 401 and caught.value.status == "UNAUTHENTICATED"
    body: dict[str, Any] = {"contents": [{"parts": [{"text": "by query"}]}]}
    url = f"{locked.url}/v1beta/models/local/echo:streamGenerateContent"
    r = httpx.post(f"{url}?alt=sse&key={MASTER}", json=body, timeout=30)
    assert r.status_code == 200 and b'"by "' in r.content
    r = httpx.post(f"{url}?key={MASTER}", json=body, timeout=30)  # the JSON-array stream
    assert r.status_code == 200
    assert "".join(p["text"] for c in r.json() for p in c["candidates"][0]["content"]["parts"])
    r = httpx.post(f"{url}?alt=sse", json=body, timeout=30)
    assert r.status_code == 401
    assert r.json()["error"]["status"] == "UNAUTHENTICATED"
    r = httpx.get(f"{locked.url}/v1beta/models?key={MASTER}", timeout=30)
    assert r.status_code == 200 and r.json()["models"]
    r = httpx.post(
        f"{locked.url}/v1beta/models/local/echo:countTokens?key={MASTER}", json=body, timeout=30
    )
    assert r.status_code == 200 and r.json()["totalTokens"] == 2
    assert MASTER not in locked.proc.output(), "a key in the URL never reaches the log"
