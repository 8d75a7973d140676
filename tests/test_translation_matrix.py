"""Translation between every client protocol and every upstream protocol, end to end:
real gateway and fake-upstream processes, the official ``openai`` (Chat Completions and
Responses) and ``anthropic`` SDKs as clients.

a. Every recorded provider stream, replayed by the fake upstream in its own wire format,
   consumed through the three client APIs (streamed and not): text, reasoning, signatures,
   tool calls, stop reason and usage equal what the recording holds (expected values
   from ``support.assemble``, which walks the raw JSON).
b. One scenario suite for every pair client protocol x upstream protocol, the upstream
   request checked in the fake's log (it proves what the gateway translated).
c. Opaque provider data (Anthropic thinking signatures, Gemini thought signatures) sent
   back through a client on the next turn.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anthropic
import httpx
import openai
import pytest
from support.assemble import (
    CANON_TO_ANTHROPIC,
    TO_CANON,
    Answer,
    Asked,
    Call,
    anthropic_events,
    anthropic_message,
    asked,
    expect_anthropic,
    expect_openai,
    openai_chunks,
    openai_completion,
    payloads,
    recorded,
    wire_of,
)
from support.paths import fixture_files, fixtures_dir
from support.procs import FakeUpstream, Gateway, sse_payloads
from support.responses_assemble import (
    STOP_OF_CANON,
    events_answer,
    expect_responses,
    response_answer,
)

from tokenrelay.protocols.anthropic import wire as anthropic_wire
from tokenrelay.protocols.gemini import codec as gemini
from tokenrelay.protocols.gemini import egress as gemini_egress
from tokenrelay.protocols.gemini import stream as gemini_stream
from tokenrelay.protocols.openai import codec as openai_codec
from tokenrelay.protocols.openai import stream as openai_stream
from tokenrelay.protocols.responses import codec as responses_codec
from tokenrelay.protocols.responses import wire as responses_wire

pytestmark = pytest.mark.timeout(60)

PROVIDER = {"openai": "fake", "anthropic": "fakeant", "gemini": "fakegem", "responses": "fakeresp"}

# The OpenAI Responses recordings (openai/responses_*.sse) are replayed by the fake as a
# Responses upstream (``fakeresp``), the others in their own wire.
RECORDINGS = fixture_files()
INCLUDE = ["reasoning.encrypted_content"]


@dataclass
class Ends:
    """The two SDK clients and a connection to the fake's log, made once per module
    (each new client builds an SSL context: ~50 ms)."""

    gateway: Gateway
    fake: FakeUpstream
    oa: openai.OpenAI
    an: anthropic.Anthropic
    http: httpx.Client

    def clear(self) -> None:
        self.http.delete(f"{self.fake.base_url}/_fake/log")

    def find(self, model: str) -> dict[str, Any]:
        """The fake's log entry for ``model`` (as ``FakeUpstream.find``)."""
        for _ in range(40):
            log = self.http.get(f"{self.fake.base_url}/_fake/log").json()
            for entry in reversed(log):
                body = entry.get("body") or {}
                if (isinstance(body, dict) and body.get("model") == model) or model in str(
                    entry.get("path", "")
                ):
                    return dict(entry)
            time.sleep(0.05)
        raise AssertionError(f"the fake upstream saw no request for {model!r}")


@pytest.fixture(scope="module")
def ends(gateway: Gateway, fake: FakeUpstream) -> Iterator[Ends]:
    with (
        openai.OpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0) as oa,
        anthropic.Anthropic(
            base_url=f"{gateway.url}/anthropic", api_key="sk-client", max_retries=0
        ) as an,
        httpx.Client(timeout=10) as http,
    ):
        yield Ends(gateway, fake, oa, an, http)


def replay_model(path: Path) -> str:
    return f"{PROVIDER[wire_of(path)]}/replay/{path.parent.name}/{path.stem}"


def check(got: Answer, exp: Answer) -> None:
    """``got`` (what a client received) against ``exp`` (what it should)."""
    if exp.error is not None:
        assert got.error is not None and exp.error in got.error
        if got.text or got.reasoning:  # a stream: what came before the error is whole
            assert (got.text, got.reasoning) == (exp.text, exp.reasoning)
        return
    assert got.error is None
    assert got.text == exp.text
    assert got.reasoning == exp.reasoning
    assert got.signature == exp.signature
    assert [(c.name, c.input) for c in got.calls] == [(c.name, c.input) for c in exp.calls]
    for mine, theirs in zip(got.calls, exp.calls, strict=True):
        assert mine.id, "every call has an id"
        if theirs.id is not None:  # kept through translation (Gemini gives none)
            assert mine.id == theirs.id
    assert len({c.id for c in got.calls}) == len(got.calls), "call ids are distinct"
    assert got.stop == exp.stop
    assert {k: got.usage.get(k) for k in exp.usage} == exp.usage


# --- the mapping tables the expectations rest on ------------------------------------------


def test_the_stop_tables_agree_with_the_codecs() -> None:
    """``support.assemble`` states the stop-word mapping independently; the codecs'
    tables must say the same (a change in either shows up here)."""
    for word, canon in TO_CANON["openai"].items():
        assert openai_stream.FINISH_FROM_WIRE[word] == canon
        assert openai_stream.FINISH_TO_WIRE[canon] == word
    for word, canon in TO_CANON["anthropic"].items():
        assert anthropic_wire.FINISH_FROM_WIRE[word] == canon
    for canon, word in CANON_TO_ANTHROPIC.items():
        assert anthropic_wire.FINISH_TO_WIRE[canon] == word
    for word, canon in TO_CANON["gemini"].items():
        assert gemini_stream.FINISH_FROM_WIRE[word] == canon
    for word, canon in TO_CANON["responses"].items():
        assert responses_wire.status_of(canon) == (
            ("completed", None) if word == "completed" else ("incomplete", {"reason": word})
        )
    for canon, word in STOP_OF_CANON.items():
        status, details = responses_wire.status_of(canon)
        assert word == (details["reason"] if details else status)


def test_every_recording_is_replayed() -> None:
    folder = fixtures_dir()
    dirs = {p.parent.name for p in RECORDINGS}
    assert dirs == {"anthropic", "azure", "deepseek", "gemini", "openai", "openrouter"}
    assert sorted(folder.glob("*/*.sse")) == RECORDINGS
    assert sum(wire_of(p) == "responses" for p in RECORDINGS) == 4


# --- a. recordings through both client APIs ----------------------------------------------


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "create"])
@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recording_through_the_openai_api(ends: Ends, path: Path, streamed: bool) -> None:
    fixtures_dir()
    exp = expect_openai(recorded(path))
    model = replay_model(path)
    messages: Any = [{"role": "user", "content": "replay"}]
    got = Answer()
    if streamed:
        chunks: list[Any] = []
        try:
            stream = ends.oa.chat.completions.create(
                model=model, messages=messages, stream=True, stream_options={"include_usage": True}
            )
            chunks.extend(stream)
        except openai.APIError as exc:
            got.error = exc.message
        openai_chunks(chunks, got)
        assert {c.model for c in chunks} <= {model}
    else:
        try:
            completion = ends.oa.chat.completions.create(model=model, messages=messages)
            got = openai_completion(completion)
            assert completion.model == model
        except openai.APIError as exc:
            got.error = exc.message
    check(got, exp)


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "create"])
@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recording_through_the_anthropic_api(ends: Ends, path: Path, streamed: bool) -> None:
    fixtures_dir()
    exp = expect_anthropic(recorded(path))
    model = replay_model(path)
    messages: Any = [{"role": "user", "content": "replay"}]
    got = Answer()
    if streamed:
        events: list[Any] = []
        final = None
        try:
            with ends.an.messages.stream(model=model, max_tokens=1024, messages=messages) as stream:
                for event in stream:
                    events.append(event)
                final = stream.get_final_message()
        except anthropic.APIError as exc:
            got.error = exc.message
        anthropic_events(events, got)
        if final is not None:  # the SDK's own accumulation says the same
            assert final.model == model
            check(anthropic_message(final), exp)
    else:
        try:
            message = ends.an.messages.create(model=model, max_tokens=1024, messages=messages)
            got = anthropic_message(message)
            assert message.model == model
        except anthropic.APIError as exc:
            got.error = exc.message
    check(got, exp)


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "create"])
@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recording_through_the_responses_api(ends: Ends, path: Path, streamed: bool) -> None:
    """``responses.stream()`` (raw events, and ``get_final_response()`` agreeing with
    them) and non-streaming ``responses.create``: a Responses recording on a Responses
    upstream is the passthrough, every other one is translated."""
    fixtures_dir()
    exp = expect_responses(recorded(path))
    if wire_of(path) == "responses" and not streamed:
        # the body is the upstream's final response, whose reasoning OpenAI encrypted
        # anew (each event that carries it has its own encryption of it)
        final = payloads(path)[-1][1]["response"]["output"]
        encrypted = [o["encrypted_content"] for o in final if o.get("encrypted_content")]
        exp.signature = "".join(encrypted) or None
    got = _ask_responses(
        ends.oa, {"model": replay_model(path), "input": "replay", "include": INCLUDE}, streamed
    )
    check(got, exp)


def expect_gemini(rec: Any) -> Answer:
    """The recording as a Gemini client sees it: text, thoughts, calls (no ids on this
    wire), the stop word by ``egress.FINISH_TO_WIRE``, the counts with thoughts apart."""
    calls = [Call(None, c.name, c.input) for c in rec.calls]
    answer = Answer(rec.text, rec.reasoning, None, calls, error=rec.error)
    canon = rec.canonical_stop
    answer.stop = gemini_egress.FINISH_TO_WIRE[canon] if canon else None
    if rec.usage is not None:
        u = rec.usage
        answer.usage = {"promptTokenCount": u.input, "candidatesTokenCount": u.output - u.reasoning}
    return answer


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "create"])
@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recording_through_the_gemini_api(ends: Ends, path: Path, streamed: bool) -> None:
    """Every recording, of every wire, read by a Gemini client (the Gemini recordings
    byte for byte: ``test_gemini_e2e.py``)."""
    fixtures_dir()
    rec = recorded(path)
    exp = expect_gemini(rec)
    body = {"contents": [{"role": "user", "parts": [{"text": "replay"}]}]}
    got = _ask_gemini(ends, replay_model(path), body, streamed)
    if exp.error is not None:
        assert got.error is not None and exp.error in got.error
        if got.text or got.reasoning:  # a stream: what came before the error is whole
            assert (got.text, got.reasoning) == (exp.text, exp.reasoning)
        return
    assert got.error is None
    assert (got.text, got.reasoning) == (exp.text, exp.reasoning)
    assert [(c.name, c.input) for c in got.calls] == [(c.name, c.input) for c in exp.calls]
    assert got.stop == exp.stop
    if rec.signature:  # a text-part signature reaches the client on a part
        assert got.signature == rec.signature
    assert {k: got.usage.get(k) for k in exp.usage} == exp.usage


def _raw(ends: Ends, client: str, model: str) -> bytes:
    gateway = ends.gateway
    if client == "openai":
        url = f"{gateway.base_url}/chat/completions"
        body: dict[str, Any] = {"model": model, "stream": True}
    else:
        url = f"{gateway.url}/v1/messages"
        body = {"model": model, "stream": True, "max_tokens": 100}
    body["messages"] = [{"role": "user", "content": "replay"}]
    with ends.http.stream("POST", url, json=body) as response:
        assert response.status_code == 200
        return response.read()


@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_gemini_signatures_reach_the_client_where_its_protocol_has_a_slot(
    ends: Ends, client: str
) -> None:
    """A thought signature on a Gemini *text* part reaches an Anthropic client as the
    thinking block's signature and an OpenAI client in ``reasoning_details``. A signature
    on a *function call* reaches an OpenAI client as
    ``extra_content.google.thought_signature``; an Anthropic ``tool_use`` block has no
    slot for it, so it is not in the bytes that client gets (what goes back upstream
    then is ``gemini.DROPPED`` "ToolCallPart.signature missing" -> ``SKIP_SIGNATURE``,
    checked in ``test_gemini_call_signature_round_trip``)."""
    folder = fixtures_dir()
    text_sig = recorded(folder / "gemini" / "stream_thinking_summaries.sse").signature
    call_rec = recorded(folder / "gemini" / "stream_function_call_thought_signature.sse")
    call_sig = call_rec.calls[0].signature
    assert text_sig and call_sig
    body = _raw(ends, client, "fakegem/replay/gemini/stream_thinking_summaries")
    assert text_sig.encode() in body
    body = _raw(ends, client, "fakegem/replay/gemini/stream_function_call_thought_signature")
    assert (call_sig.encode() in body) == (client == "openai")
    assert b"get_country" in body


# --- b. one scenario suite for every pair client protocol x upstream protocol ------------

CLIENTS = ["openai", "anthropic", "gemini"]
UPSTREAMS = ["openai", "anthropic", "gemini"]
EVERY_CLIENT = [*CLIENTS, "responses"]
EVERY_UPSTREAM = [*UPSTREAMS, "responses"]
ALL = [(c, u) for c in EVERY_CLIENT for u in [*EVERY_UPSTREAM, "local"]]  # local/echo serves
REMOTE = [(c, u) for c in EVERY_CLIENT for u in EVERY_UPSTREAM]  # it cannot (thinking, faults)
MODES = pytest.mark.parametrize("streamed", [True, False], ids=["stream", "create"])


def pair_id(pair: tuple[str, str]) -> str:
    return f"{pair[0]}-client>{pair[1]}-upstream"


ALL_PAIRS = pytest.mark.parametrize("pair", ALL, ids=pair_id)
REMOTE_PAIRS = pytest.mark.parametrize("pair", REMOTE, ids=pair_id)


@dataclass
class Turn:
    """One turn of a conversation, said once and rendered for either client protocol."""

    role: str  # user | assistant | tool
    text: str = ""
    images: list[str] = field(default_factory=list)  # URLs or data: URLs
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # id, name, args
    call_id: str = ""  # tool: the call it answers
    name: str = ""  # tool: the function's name


def _openai_image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def _anthropic_image(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        media_type, _, data = url[5:].partition(";base64,")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def openai_messages(system: str | None, turns: list[Turn]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for t in turns:
        if t.role == "tool":
            out.append({"role": "tool", "tool_call_id": t.call_id, "content": t.text})
        elif t.role == "assistant":
            message: dict[str, Any] = {"role": "assistant", "content": t.text or None}
            if t.calls:
                message["tool_calls"] = [
                    {
                        "id": i,
                        "type": "function",
                        "function": {"name": n, "arguments": json.dumps(a)},
                    }
                    for i, n, a in t.calls
                ]
            out.append(message)
        elif t.images:
            parts = [{"type": "text", "text": t.text}, *map(_openai_image, t.images)]
            out.append({"role": "user", "content": parts})
        else:
            out.append({"role": "user", "content": t.text})
    return out


def anthropic_messages(turns: list[Turn]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for t in turns:
        if t.role == "tool":
            block = {"type": "tool_result", "tool_use_id": t.call_id, "content": t.text}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif t.role == "assistant":
            blocks: list[dict[str, Any]] = [{"type": "text", "text": t.text}] if t.text else []
            blocks += [{"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in t.calls]
            out.append({"role": "assistant", "content": blocks})
        elif t.images:
            blocks = [{"type": "text", "text": t.text}, *map(_anthropic_image, t.images)]
            out.append({"role": "user", "content": blocks})
        else:
            out.append({"role": "user", "content": t.text})
    return out


def responses_input(turns: list[Turn]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for t in turns:
        if t.role == "tool":
            out.append({"type": "function_call_output", "call_id": t.call_id, "output": t.text})
        elif t.role == "assistant":
            if t.text:
                out.append({"role": "assistant", "content": t.text})
            out += [
                {"type": "function_call", "call_id": i, "name": n, "arguments": json.dumps(a)}
                for i, n, a in t.calls
            ]
        elif t.images:
            parts = [{"type": "input_text", "text": t.text}]
            parts += [{"type": "input_image", "image_url": url} for url in t.images]
            out.append({"role": "user", "content": parts})
        else:
            out.append({"role": "user", "content": t.text})
    return out


def _gemini_image(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        media_type, _, data = url[5:].partition(";base64,")
        return {"inlineData": {"mimeType": media_type, "data": data}}
    return {"fileData": {"mimeType": "image/png", "fileUri": url}}


def gemini_contents(turns: list[Turn]) -> list[dict[str, Any]]:
    """The conversation as a Gemini client writes it: results answer calls by name, all
    results of one step in one user turn."""
    out: list[dict[str, Any]] = []
    for t in turns:
        if t.role == "tool":
            part = {"functionResponse": {"name": t.name, "response": {"output": t.text}}}
            if out and out[-1]["role"] == "user" and "functionResponse" in out[-1]["parts"][-1]:
                out[-1]["parts"].append(part)
            else:
                out.append({"role": "user", "parts": [part]})
        elif t.role == "assistant":
            parts: list[dict[str, Any]] = [{"text": t.text}] if t.text else []
            parts += [{"functionCall": {"name": n, "args": a}} for _, n, a in t.calls]
            out.append({"role": "model", "parts": parts})
        else:
            parts = [{"text": t.text}, *map(_gemini_image, t.images)]
            out.append({"role": "user", "parts": parts})
    return out


def expected_turns(turns: list[Turn], wire: str) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The conversation as ``support.assemble.asked`` reads it back from ``wire``:
    Gemini carries no call ids and names its results (``gemini.DROPPED`` entry
    "ToolCallPart.id / ToolResultPart.tool_call_id"); the others carry ids, no names."""
    gem = wire == "gemini"
    out: list[tuple[str, list[tuple[Any, ...]]]] = []
    for t in turns:
        if t.role == "tool":
            item = ("result", None if gem else t.call_id, t.name if gem else None, t.text)
            if out and out[-1][0] == "user" and out[-1][1][-1][0] == "result":
                out[-1][1].append(item)
            else:
                out.append(("user", [item]))
            continue
        items: list[tuple[Any, ...]] = [("text", t.text)] if t.text else []
        items += [("image", url) for url in t.images]
        items += [("call", None if gem else i, n, a) for i, n, a in t.calls]
        out.append((t.role, items))
    return out


TOOLS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "get_weather",
        "Current weather in a city",
        {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    ),
    (
        "get_time",
        "Local time in a time zone",
        {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
    ),
]
# The same schemas in Gemini's Schema dialect (gemini_schema: keys outside the dialect,
# like additionalProperties, are dropped).
GEMINI_TOOLS = [
    (
        "get_weather",
        "Current weather in a city",
        {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    ),
    TOOLS[1],
]
TOOL_CHOICE_WIRE: dict[str, dict[str, Any]] = {
    "auto": {
        "responses": "auto",
        "openai": "auto",
        "anthropic": {"type": "auto"},
        "gemini": {"functionCallingConfig": {"mode": "AUTO"}},
    },
    "none": {
        "responses": "none",
        "openai": "none",
        "anthropic": {"type": "none"},
        "gemini": {"functionCallingConfig": {"mode": "NONE"}},
    },
    "required": {
        "responses": "required",
        "openai": "required",
        "anthropic": {"type": "any"},
        "gemini": {"functionCallingConfig": {"mode": "ANY"}},
    },
    "get_time": {
        "responses": {"type": "function", "name": "get_time"},
        "openai": {"type": "function", "function": {"name": "get_time"}},
        "anthropic": {"type": "tool", "name": "get_time"},
        "gemini": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}},
    },
}


def model_of(upstream: str, scenario: str) -> str:
    if upstream == "local":
        return "local/echo"
    return f"{PROVIDER[upstream]}/{scenario}"


@dataclass
class Exchange:
    answer: Answer
    asked: Asked | None = None  # the upstream's request in neutral terms (None: local)
    body: dict[str, Any] = field(default_factory=dict)  # as the upstream received it
    client: str = ""


def ask(
    ends: Ends,
    client: str,
    upstream: str,
    scenario: str,
    turns: list[Turn],
    *,
    streamed: bool = True,
    system: str | None = None,
    tool_choice: str | None = None,
    tools: bool = False,
    max_tokens: int | None = None,
    stop: list[str] | None = None,
    thinking: bool = False,
    serial: bool = False,
) -> Exchange:
    """One request through the gateway with ``client``'s SDK; what it answered, and
    what the upstream was asked (from the fake's log)."""
    ends.clear()
    model = model_of(upstream, scenario)
    if client == "openai":
        kwargs: dict[str, Any] = {"model": model, "messages": openai_messages(system, turns)}
        if tools:
            kwargs["tools"] = [
                {"type": "function", "function": {"name": n, "description": d, "parameters": p}}
                for n, d, p in TOOLS
            ]
        if tool_choice is not None:
            kwargs["tool_choice"] = TOOL_CHOICE_WIRE[tool_choice]["openai"]
        if serial:
            kwargs["parallel_tool_calls"] = False
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if stop is not None:
            kwargs["stop"] = stop
        if thinking:
            kwargs["reasoning_effort"] = "medium"
        answer = _ask_openai(ends.oa, kwargs, streamed)
    elif client == "responses":  # no stop sequences on this wire (DROPPED "stop")
        kwargs = {"model": model, "input": responses_input(turns), "include": INCLUDE}
        if system:
            kwargs["instructions"] = system
        if tools:
            kwargs["tools"] = [
                {"type": "function", "name": n, "description": d, "parameters": p}
                for n, d, p in TOOLS
            ]
        if tool_choice is not None:
            kwargs["tool_choice"] = TOOL_CHOICE_WIRE[tool_choice]["responses"]
        if serial:
            kwargs["parallel_tool_calls"] = False
        if max_tokens is not None:
            kwargs["max_output_tokens"] = max_tokens
        if thinking:
            kwargs["reasoning"] = {"effort": "medium", "summary": "auto"}
        answer = _ask_responses(ends.oa, kwargs, streamed)
    elif client == "gemini":
        body: dict[str, Any] = {"contents": gemini_contents(turns)}
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        if tools:
            declarations = [{"name": n, "description": d, "parameters": p} for n, d, p in TOOLS]
            body["tools"] = [{"functionDeclarations": declarations}]
        if tool_choice is not None:
            body["toolConfig"] = TOOL_CHOICE_WIRE[tool_choice]["gemini"]
        config: dict[str, Any] = {}
        if max_tokens is not None:
            config["maxOutputTokens"] = max_tokens
        if stop is not None:
            config["stopSequences"] = stop
        if thinking:
            config["thinkingConfig"] = {"thinkingBudget": 2048, "includeThoughts": True}
        if config:
            body["generationConfig"] = config
        answer = _ask_gemini(ends, model, body, streamed)
    else:
        kwargs = {"model": model, "messages": anthropic_messages(turns)}
        kwargs["max_tokens"] = max_tokens if max_tokens is not None else 4096
        if system:
            kwargs["system"] = system
        if tools:
            kwargs["tools"] = [
                {"name": n, "description": d, "input_schema": p} for n, d, p in TOOLS
            ]
        if tool_choice is not None:
            kwargs["tool_choice"] = dict(TOOL_CHOICE_WIRE[tool_choice]["anthropic"])
            if serial:
                kwargs["tool_choice"]["disable_parallel_tool_use"] = True
        if stop is not None:
            kwargs["stop_sequences"] = stop
        if thinking:
            kwargs["thinking"] = {"type": "enabled", "budget_tokens": 2048}
        answer = _ask_anthropic(ends.an, kwargs, streamed)
    if upstream == "local":
        return Exchange(answer)
    entry = ends.find(model.split("/", 1)[1])
    body = entry["body"]
    if upstream != "gemini":
        assert body["stream"] is True, "the gateway always streams from the upstream"
    else:
        assert ":streamGenerateContent" in entry["path"] and entry["query"] == "alt=sse"
    return Exchange(answer, asked(upstream, body), body, client)


def gemini_answer(chunks: list[Any], answer: Answer | None = None) -> Answer:
    """What a Gemini client reads from ``GenerateContentResponse`` chunks."""
    got = answer or Answer()
    for chunk in chunks:
        if "error" in chunk:
            got.error = chunk["error"]["message"]
            break
        for candidate in chunk.get("candidates") or []:
            for n, part in enumerate(candidate.get("content", {}).get("parts") or []):
                if got.signature is None and "functionCall" not in part:
                    got.signature = part.get("thoughtSignature")
                if "functionCall" in part:
                    call = part["functionCall"]
                    call_id = call.get("id") or f"gemini-{len(got.calls)}-{n}"
                    got.calls.append(Call(call_id, call["name"], call.get("args") or {}))
                elif part.get("thought"):
                    got.reasoning += part.get("text", "")
                else:
                    got.text += part.get("text", "")
            if candidate.get("finishReason"):
                got.stop = candidate["finishReason"]
        if chunk.get("usageMetadata"):
            got.usage = dict(chunk["usageMetadata"])
    return got


def _ask_gemini(ends: Ends, model: str, body: dict[str, Any], streamed: bool) -> Answer:
    """The Gemini wire by hand (the google-genai SDK is ``test_gemini_e2e.py``'s): the
    request exactly as the matrix means it, ``parameters`` in JSON Schema included."""
    method = "streamGenerateContent?alt=sse" if streamed else "generateContent"
    # the model is in the path: a scenario's options (echo?limit=1) are escaped there
    url = f"{ends.gateway.url}/v1beta/models/{quote(model, safe='/')}:{method}"
    with ends.http.stream("POST", url, json=body, timeout=30) as response:
        raw = response.read()
    if response.status_code != 200:
        return Answer(error=json.loads(raw)["error"]["message"])
    if not streamed:
        return gemini_answer([json.loads(raw)])
    assert b"\nid: " not in b"\n" + raw, "Gemini clients read data: lines only"
    return gemini_answer(sse_payloads(raw))


def _ask_openai(client: openai.OpenAI, kwargs: dict[str, Any], streamed: bool) -> Answer:
    got = Answer()
    if not streamed:
        try:
            return openai_completion(client.chat.completions.create(**kwargs))
        except openai.APIError as exc:
            got.error = exc.message
            return got
    chunks: list[Any] = []
    try:
        stream = client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
        chunks.extend(stream)
    except openai.APIError as exc:
        got.error = exc.message
    return openai_chunks(chunks, got)


def _ask_responses(client: openai.OpenAI, kwargs: dict[str, Any], streamed: bool) -> Answer:
    got = Answer()
    if not streamed:
        try:
            response = client.responses.create(**kwargs)
        except openai.APIError as exc:
            got.error = exc.message
            return got
        assert response.model == kwargs["model"]
        return response_answer(response)
    events: list[Any] = []
    try:
        with client.responses.stream(**kwargs) as stream:
            events.extend(stream)
            got = events_answer(events)
            if got.error is not None or got.stop not in STOP_OF_CANON.values():
                return got  # failed or cut: the SDK has no final response to give
            assert got.stop == "completed" or events[-1].type == "response.incomplete"
            if got.stop != "completed":
                return got
            final = stream.get_final_response()
    except openai.APIError as exc:
        got.error = exc.message
        return events_answer(events, got)
    # the SDK's own accumulation agrees with the raw events (OpenAI re-encrypts the
    # reasoning for each event that carries it: the recording's values differ)
    assert final.model == kwargs["model"]
    mine = response_answer(final)
    assert (mine.text, mine.reasoning, bool(mine.signature), mine.stop, mine.usage) == (
        got.text,
        got.reasoning,
        bool(got.signature),
        got.stop,
        got.usage,
    )
    assert [(c.id, c.name, c.input) for c in mine.calls] == [
        (c.id, c.name, c.input) for c in got.calls
    ]
    return got


def _ask_anthropic(client: anthropic.Anthropic, kwargs: dict[str, Any], streamed: bool) -> Answer:
    got = Answer()
    if not streamed:
        try:
            return anthropic_message(client.messages.create(**kwargs))
        except anthropic.APIError as exc:
            got.error = exc.message
            return got
    events: list[Any] = []
    try:
        with client.messages.stream(**kwargs) as stream:
            for event in stream:
                events.append(event)
            final = anthropic_message(stream.get_final_message())
    except anthropic.APIError as exc:
        got.error = exc.message
        return anthropic_events(events, got)
    got = anthropic_events(events, got)
    # the SDK's own accumulation agrees with the raw events
    assert (final.text, final.reasoning, final.signature, final.stop) == (
        got.text,
        got.reasoning,
        got.signature,
        got.stop,
    )
    assert [(c.id, c.name, c.input) for c in final.calls] == [
        (c.id, c.name, c.input) for c in got.calls
    ]
    return got


def stop_word(client: str, canon: str) -> str:
    if client == "responses":
        return STOP_OF_CANON[canon]
    if client == "gemini":
        return gemini_egress.FINISH_TO_WIRE[canon]
    return CANON_TO_ANTHROPIC[canon] if client == "anthropic" else canon


def usage_of(client: str, answer: Answer) -> tuple[int, int]:
    """(input, output) tokens in each client protocol's words."""
    u = answer.usage
    if client in ("anthropic", "responses"):
        return u["input_tokens"], u["output_tokens"]
    if client == "gemini":  # thoughts are counted apart from the answer
        return u["promptTokenCount"], u["candidatesTokenCount"] + u.get("thoughtsTokenCount", 0)
    return u["prompt_tokens"], u["completion_tokens"]


def words(*texts: str) -> int:
    return sum(len(t.split()) for t in texts)


HELLO = "hello there, upstream"


@MODES
@ALL_PAIRS
def test_plain_text(ends: Ends, pair: tuple[str, str], streamed: bool) -> None:
    client, upstream = pair
    ex = ask(ends, client, upstream, "echo", [Turn("user", HELLO)], streamed=streamed)
    got = ex.answer
    assert got.error is None and got.text == HELLO and got.reasoning == "" and got.calls == []
    assert got.stop == stop_word(client, "stop")
    # The fake counts one token per word it read in its own wire format: the prompt
    # arrived whole and once.
    assert usage_of(client, got) == (words(HELLO), words(HELLO))
    if ex.asked is not None:
        assert ex.asked.turns == [("user", [("text", HELLO)])]
        assert ex.asked.system == [] and ex.asked.tools == []


HISTORY = [
    Turn("user", "first question"),
    Turn("assistant", "first answer"),
    Turn("user", "second question, longer"),
    Turn("assistant", "second answer"),
    Turn("user", "third and last question"),
]


@MODES
@ALL_PAIRS
def test_multi_turn(ends: Ends, pair: tuple[str, str], streamed: bool) -> None:
    client, upstream = pair
    ex = ask(ends, client, upstream, "echo", HISTORY, streamed=streamed)
    got = ex.answer
    assert got.text == "third and last question"
    assert usage_of(client, got) == (words(*(t.text for t in HISTORY)), 4)
    if ex.asked is not None:  # roles and order, in the upstream's words
        assert ex.asked.turns == expected_turns(HISTORY, upstream)
        if upstream == "gemini":
            assert [c["role"] for c in ex.body["contents"]] == ["user", "model"] * 2 + ["user"]


SYSTEM = "You are terse. Answer in English."
SYSTEM_AT = {
    "openai": "messages[0]",
    "anthropic": "system",
    "gemini": "systemInstruction",
    "responses": "instructions",
}


@MODES
@ALL_PAIRS
def test_system_prompt(ends: Ends, pair: tuple[str, str], streamed: bool) -> None:
    client, upstream = pair
    turns = [Turn("user", HELLO)]
    ex = ask(ends, client, upstream, "echo", turns, streamed=streamed, system=SYSTEM)
    got = ex.answer
    assert got.text == HELLO
    # the system prompt was read as text by the upstream (and by local/echo's counter)
    assert usage_of(client, got) == (words(SYSTEM, HELLO), words(HELLO))
    if ex.asked is not None:
        assert ex.asked.system == [SYSTEM]
        assert ex.asked.system_at == SYSTEM_AT[upstream]
        assert ex.asked.turns == [("user", [("text", HELLO)])]  # not a turn of its own


PARALLEL = (
    'Checking both.\n/call get_weather {"city": "Paris"}\n/call get_time {"tz": "Europe/Paris"}'
)
PARALLEL_CALLS = [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "Europe/Paris"})]


def _check_tools_asked(ex: Exchange, upstream: str, choice: str) -> None:
    assert ex.asked is not None
    rewritten = upstream == "gemini" and ex.client != "gemini"  # a passthrough is as written
    assert ex.asked.tools == (GEMINI_TOOLS if rewritten else TOOLS)
    assert ex.asked.tool_choice == TOOL_CHOICE_WIRE[choice][upstream]


@MODES
@ALL_PAIRS
def test_tools_with_parallel_calls(ends: Ends, pair: tuple[str, str], streamed: bool) -> None:
    """The fake's ``tools`` scenario streams one call per ``/call`` line (and 400s for a
    tool the request did not offer). local/echo streams a single call: it gets one."""
    client, upstream = pair
    text = PARALLEL if upstream != "local" else '/call get_weather {"city": "Paris"}'
    expected = PARALLEL_CALLS if upstream != "local" else PARALLEL_CALLS[:1]
    ex = ask(
        ends,
        client,
        upstream,
        "tools",
        [Turn("user", text)],
        streamed=streamed,
        tools=True,
        tool_choice="required",
    )
    got = ex.answer
    assert got.error is None
    assert got.text == ("Checking both." if upstream != "local" else "")
    assert [(c.name, c.input) for c in got.calls] == expected
    assert all(c.id for c in got.calls) and len({c.id for c in got.calls}) == len(got.calls)
    assert got.stop == stop_word(client, "tool_calls")
    # the ids the upstream gave are the ids the client gets (Gemini and local/echo give
    # none: the gateway makes them up); on the Anthropic wire, with Anthropic's prefix
    prefix = {
        "openai": "call_chatcmpl-fake",
        "anthropic": "toolu_msg_fake",
        "responses": "call_fake",
    }.get(upstream)
    if prefix is not None and client != "gemini":  # the Gemini wire carries no call ids
        ids = [str(c.id) for c in got.calls]
        if client == "anthropic" and upstream != "anthropic":
            assert all(i.startswith("toolu_") for i in ids)
            ids = [i.removeprefix("toolu_") for i in ids]
        assert [i[: len(prefix)] for i in ids] == [prefix] * len(expected)
        assert [i.rsplit("_", 1)[1] for i in ids] == [str(n) for n in range(len(expected))]
    if ex.asked is not None:
        _check_tools_asked(ex, upstream, "required")


@MODES
@pytest.mark.parametrize("client", EVERY_CLIENT)
def test_interleaved_parallel_calls_from_an_openai_upstream(
    ends: Ends, client: str, streamed: bool
) -> None:
    """The OpenAI wire may interleave the fragments of parallel calls (0, 1, 0, 1, ...);
    an Anthropic client still gets each call whole in its own block, arguments intact."""
    ex = ask(
        ends,
        client,
        "openai",
        "tools?interleave=1",
        [Turn("user", PARALLEL)],
        streamed=streamed,
        tools=True,
        tool_choice="required",
    )
    assert [(c.name, c.input) for c in ex.answer.calls] == PARALLEL_CALLS
    assert ex.answer.stop == stop_word(client, "tool_calls")


@pytest.mark.parametrize("serial", [False, True], ids=["parallel", "serial"])
@pytest.mark.parametrize("choice", list(TOOL_CHOICE_WIRE))
@REMOTE_PAIRS
def test_tool_choice_and_parallel_switch(
    ends: Ends, pair: tuple[str, str], choice: str, serial: bool
) -> None:
    """Every tool_choice word in every upstream's words; "no parallel calls" becomes
    OpenAI's ``parallel_tool_calls: false`` or Anthropic's
    ``tool_choice.disable_parallel_tool_use`` (``ADJUSTMENTS`` "parallel_tool_calls
    false"), and Gemini has no switch (``gemini.DROPPED`` "parallel_tool_calls")."""
    client, upstream = pair
    if serial and client == "gemini":
        pytest.skip("a Gemini client cannot ask for serial calls (no such field)")
    ex = ask(
        ends,
        client,
        upstream,
        "gen/1",
        [Turn("user", HELLO)],
        tools=True,
        tool_choice=choice,
        serial=serial and choice != "none",
    )
    assert ex.answer.text == "tok0 "
    assert ex.asked is not None
    wire = TOOL_CHOICE_WIRE[choice][upstream]
    if serial and choice != "none":
        if upstream == "anthropic":
            wire = {**wire, "disable_parallel_tool_use": True}
        elif upstream in ("openai", "responses"):
            assert ex.body["parallel_tool_calls"] is False
        else:
            assert _dropped("parallel_tool_calls") == "dropped"
            assert "parallel" not in json.dumps(ex.body)
    else:
        assert "parallel_tool_calls" not in ex.body
    assert ex.asked.tool_choice == wire


WITH_RESULTS = [
    Turn("user", "Weather and time in Paris?"),
    Turn(
        "assistant",
        "Checking.",
        calls=[
            ("call_w1", "get_weather", {"city": "Paris"}),
            ("call_t2", "get_time", {"tz": "Europe/Paris"}),
        ],
    ),
    Turn("tool", "18°C, sunny", call_id="call_w1", name="get_weather"),
    Turn("tool", "14:05", call_id="call_t2", name="get_time"),
]


@MODES
@ALL_PAIRS
def test_tool_results_in_history(ends: Ends, pair: tuple[str, str], streamed: bool) -> None:
    client, upstream = pair
    ex = ask(
        ends,
        client,
        upstream,
        "gen/3",
        WITH_RESULTS,
        streamed=streamed,
        tools=True,
        tool_choice="get_time",
    )
    got = ex.answer
    assert got.error is None
    if upstream == "local":  # after tool results, local/echo echoes the results
        assert got.text == "18°C, sunny 14:05"
        return
    assert got.text == "tok0 tok1 tok2 "
    assert ex.asked is not None
    if client == "gemini" and upstream != "gemini":
        # the Gemini wire pairs results with calls by name: the gateway makes the ids up,
        # each result carrying its call's
        turns = ex.asked.turns
        call_ids = [i[1] for i in turns[1][1] if i[0] == "call"]
        result_ids = [i[1] for i in turns[2][1] if i[0] == "result"]
        assert call_ids == result_ids and len(set(call_ids)) == 2
        assert _without_ids(turns) == _without_ids(expected_turns(WITH_RESULTS, upstream))
    else:
        assert ex.asked.turns == expected_turns(WITH_RESULTS, upstream)
    _check_tools_asked(ex, upstream, "get_time")
    if upstream == "gemini":  # results in one user turn, as Gemini wants parallel ones
        results = ex.body["contents"][2]["parts"]
        assert results == [
            {"functionResponse": {"name": "get_weather", "response": {"output": "18°C, sunny"}}},
            {"functionResponse": {"name": "get_time", "response": {"output": "14:05"}}},
        ]


def _without_ids(turns: list[tuple[str, list[tuple[Any, ...]]]]) -> list[Any]:
    return [
        (role, [(i[0], None, *i[2:]) if i[0] in ("call", "result") else i for i in items])
        for role, items in turns
    ]


THOUGHT_OF = "Reasoning about: "


EFFORT_CLIENTS = ("openai", "responses")  # they ask by effort; the others by a budget (2048)


@MODES
@REMOTE_PAIRS
def test_thinking(ends: Ends, pair: tuple[str, str], streamed: bool) -> None:
    """The fake's ``think`` scenario: reasoning, signed (Anthropic signature_delta, Gemini
    thoughtSignature on the first answer part), then the echo."""
    from tokenrelay.fake.scenes import signature
    from tokenrelay.protocols.anthropic import codec as anthropic_codec

    client, upstream = pair
    ex = ask(
        ends,
        client,
        upstream,
        "think",
        [Turn("user", HELLO)],
        streamed=streamed,
        thinking=True,
    )
    got = ex.answer
    thought = THOUGHT_OF + HELLO
    assert got.error is None and got.text == HELLO and got.reasoning == thought
    # The OpenAI wire has no signature: an Anthropic client gets none from an OpenAI
    # upstream, and an OpenAI client never sees one.
    signed = client in ("anthropic", "responses", "gemini") and upstream != "openai"
    assert got.signature == (signature(thought) if signed else None)
    assert got.stop == stop_word(client, "stop")
    assert usage_of(client, got) == (words(HELLO), words(thought) + words(HELLO))
    if client in ("openai", "responses"):  # Anthropic counts thinking in output_tokens only
        assert got.usage["reasoning_tokens"] == (0 if upstream == "anthropic" else words(thought))
    body = ex.body
    if upstream == "anthropic":
        budget = anthropic_codec.EFFORT_BUDGET["medium"] if client in EFFORT_CLIENTS else 2048
        assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
        if client in EFFORT_CLIENTS:  # ADJUSTMENTS "max_tokens unset": default + the budget
            assert body["max_tokens"] == anthropic_codec.DEFAULT_MAX_TOKENS + budget
    elif upstream == "gemini":
        budget = gemini.REASONING_BUDGETS["medium"] if client in EFFORT_CLIENTS else 2048
        config = body["generationConfig"]["thinkingConfig"]
        assert config == {"thinkingBudget": budget, "includeThoughts": True}
    elif upstream == "responses":  # DROPPED "reasoning_effort / reasoning_budget"
        effort = "medium" if client in EFFORT_CLIENTS else "low"  # a 2048 budget is low
        assert body["reasoning"] == {"effort": effort, "summary": "auto"}
    elif client == "openai":
        assert body["reasoning_effort"] == "medium"


def test_thinking_budget_reaches_an_openai_upstream(ends: Ends) -> None:
    """A thinking budget becomes OpenAI's reasoning_effort, by openai.DROPPED's table."""
    ex = ask(ends, "anthropic", "openai", "think", [Turn("user", HELLO)], thinking=True)
    assert "reasoning_budget" in {f for f, _, _ in openai_codec.DROPPED}
    assert ex.body["reasoning_effort"] in ("low", "medium", "high")


SIX = "one two three four five six"


@MODES
@ALL_PAIRS
def test_max_tokens_stop_and_stop_sequences(
    ends: Ends, pair: tuple[str, str], streamed: bool
) -> None:
    """``echo?limit=1`` honours the max tokens it was sent (as local/echo does): the
    length stop proves the limit arrived, in the upstream's own field."""
    client, upstream = pair
    ex = ask(
        ends,
        client,
        upstream,
        "echo?limit=1",
        [Turn("user", SIX)],
        streamed=streamed,
        max_tokens=3,
        stop=["STOP-HERE", "\n\n"],
    )
    got = ex.answer
    assert got.text == "one two three "
    assert got.stop == stop_word(client, "length")
    assert usage_of(client, got) == (6, 3)
    if ex.asked is not None:
        assert ex.asked.max_tokens == 3
        # no stop sequences on the Responses wire, either way (DROPPED "stop")
        dropped = "responses" in pair
        assert ex.asked.stop == (None if dropped else ["STOP-HERE", "\n\n"])


@MODES
@ALL_PAIRS
def test_a_stop_sequence_ends_the_text_before_it(
    ends: Ends, pair: tuple[str, str], streamed: bool
) -> None:
    """The upstream (the fake's ``echo?limit=1``, local/echo) stops before the first
    stop sequence it meets, the way a model does; an Anthropic client is told which one
    when the upstream said (Anthropic and local/echo do; OpenAI and Gemini only stop)."""
    client, upstream = pair
    ex = ask(
        ends,
        client,
        upstream,
        "echo?limit=1",
        [Turn("user", "one two STOP-HERE three")],
        streamed=streamed,
        stop=["nowhere", "STOP-HERE"],
    )
    got = ex.answer
    if "responses" in pair:  # no stop sequences on this wire: DROPPED "stop"
        assert any(f.startswith("stop") for f, _, _ in responses_codec.DROPPED)
        assert got.text == "one two STOP-HERE three" and "stop" not in ex.body
        return
    assert got.text == "one two "
    named = client == "anthropic" and upstream in ("anthropic", "local")
    assert got.stop == ("stop_sequence" if named else stop_word(client, "stop"))
    assert got.stop_sequence == ("STOP-HERE" if named else None)
    if ex.asked is not None:
        assert ex.asked.stop == ["nowhere", "STOP-HERE"]


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
IMAGES = [
    Turn(
        "user",
        "describe these",
        images=["https://example.com/cat.png", f"data:image/png;base64,{PNG}"],
    )
]


@MODES
@ALL_PAIRS
def test_images_by_url_and_base64(ends: Ends, pair: tuple[str, str], streamed: bool) -> None:
    client, upstream = pair
    ex = ask(ends, client, upstream, "echo", IMAGES, streamed=streamed)
    assert ex.answer.text == "describe these"
    if ex.asked is None:
        return
    assert ex.asked.turns == expected_turns(IMAGES, upstream)
    if upstream == "gemini":  # gemini.DROPPED "ImagePart url": fileData, type from the path
        parts = ex.body["contents"][0]["parts"]
        assert parts[1] == {
            "fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png"}
        }
        assert parts[2] == {"inlineData": {"mimeType": "image/png", "data": PNG}}
    elif upstream == "anthropic":
        blocks = ex.body["messages"][0]["content"]
        assert blocks[2]["source"] == {"type": "base64", "media_type": "image/png", "data": PNG}


# events before the fault: two text tokens in every wire (OpenAI: role chunk first;
# Anthropic: message_start, content_block_start, ping first)
TWO_TOKENS = {"openai": 3, "anthropic": 5, "gemini": 2, "responses": 6}


@pytest.mark.parametrize("fault", ["drop_after", "error_after"])
@REMOTE_PAIRS
def test_upstream_error_mid_stream(ends: Ends, pair: tuple[str, str], fault: str) -> None:
    """After the first tokens reached the client, an upstream failure is delivered in the
    client's protocol: an OpenAI client gets an error frame (the SDK raises APIError), an
    Anthropic client an ``event: error`` (the SDK raises); the tokens before it stand."""
    client, upstream = pair
    scenario = f"gen/20?{fault}={TWO_TOKENS[upstream]}"
    ex = ask(ends, client, upstream, scenario, [Turn("user", HELLO)])
    got = ex.answer
    assert got.text == "tok0 tok1 "
    assert got.error
    assert got.stop is None  # no finish word: the turn did not end
    if fault == "error_after":  # the upstream's own message reaches the client
        message = {
            "openai": "The server had an error (fake in-band).",
            "anthropic": "Overloaded",
            "gemini": "The model is overloaded. Please try again later.",
            "responses": "The server had an error (fake in-band).",
        }[upstream]
        assert message in got.error
    else:
        assert f"upstream {PROVIDER[upstream]} failed while streaming" in got.error


# --- c. opaque provider data comes back through the client ---------------------------------


def _adjustment(name: str) -> str:
    """An entry of ``anthropic_translate.ADJUSTMENTS`` (fails if it is gone)."""
    from tokenrelay.protocols.anthropic import codec as anthropic_codec

    found = [a.action for a in anthropic_codec.ADJUSTMENTS if a.field == name]
    assert found, f"ADJUSTMENTS has no entry {name!r}"
    return found[0]


def _dropped(name: str) -> str:
    """An entry of ``gemini.DROPPED`` (fails if it is gone)."""
    found = [action for field_, action, _ in gemini.DROPPED if field_ == name]
    assert found, f"gemini.DROPPED has no entry {name!r}"
    return found[0]


SIGNED = [
    ("fakeant", "replay/anthropic/messages_thinking"),
    ("fakeant", "think"),
    ("fakegem", "replay/gemini/stream_thinking_summaries"),
    ("fakegem", "think"),
]


@pytest.mark.parametrize(("provider", "source"), SIGNED, ids=lambda v: str(v))
def test_thinking_signature_round_trips_through_the_anthropic_api(
    ends: Ends, provider: str, source: str
) -> None:
    """Turn 1 gets a signed thinking block through the Anthropic API; turn 2 sends the
    message back as the SDK returned it; the upstream gets the identical signature where
    its wire wants it: Anthropic in the thinking block, Gemini on the answer's first text
    part (where Gemini 2.5 put it; the thought text itself is ``gemini.DROPPED``
    "ReasoningPart.text")."""
    if source.startswith("replay/"):
        fixtures_dir()
    first = [{"role": "user", "content": HELLO}]
    with ends.an.messages.stream(
        model=f"{provider}/{source}",
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=first,  # type: ignore[arg-type]
    ) as stream:
        final = stream.get_final_message()
    thinking = [b for b in final.content if b.type == "thinking"]
    text = "".join(b.text for b in final.content if b.type == "text")
    assert len(thinking) == 1 and thinking[0].signature and text
    signature_ = thinking[0].signature
    if source.startswith("replay/"):  # the very signature the provider sent
        _, wire_name, stem = source.split("/")
        assert signature_ == recorded(fixtures_dir() / wire_name / f"{stem}.sse").signature
    ends.clear()
    history: Any = [
        *first,
        {"role": "assistant", "content": final.content},
        {"role": "user", "content": "and one more"},
    ]
    reply = ends.an.messages.create(
        model=f"{provider}/echo",
        max_tokens=4096,
        messages=history,
        thinking={"type": "enabled", "budget_tokens": 2048},
    )
    assert "".join(b.text for b in reply.content if b.type == "text") == "and one more"
    body = ends.find("echo")["body"]
    if provider == "fakeant":
        assistant = body["messages"][1]["content"]
        assert assistant[0] == {
            "type": "thinking",
            "thinking": thinking[0].thinking,
            "signature": signature_,
        }
    else:
        assert "ReasoningPart.text" in {f for f, _, _ in gemini.DROPPED}
        model_turn = body["contents"][1]
        assert model_turn == {
            "role": "model",
            "parts": [{"text": text, "thoughtSignature": signature_}],
        }


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(
    "source", ["replay/gemini/stream_function_call_thought_signature", "tools"]
)
def test_gemini_call_signature_round_trip(ends: Ends, client: str, source: str) -> None:
    """A thought signature on a Gemini function call reaches an OpenAI client as
    ``extra_content.google.thought_signature`` (Google's OpenAI-compatible shape) and
    comes back on the next turn unchanged. The Anthropic wire has no slot for it: there
    the documented behaviour is ``gemini.DROPPED`` "ToolCallPart.signature missing", the
    first call of the model turn gets ``SKIP_SIGNATURE``, which Gemini accepts instead."""
    if source.startswith("replay/"):
        fixtures_dir()
    assert "SKIP_SIGNATURE" in _dropped("ToolCallPart.signature missing")
    tools = [*TOOLS, ("get_country", "The country", {"type": "object"})]
    ask_text = '/call get_weather {"city": "Paris"}'
    name = "get_country" if source.startswith("replay/") else "get_weather"
    if client == "openai":
        oa_tools: Any = [
            {"type": "function", "function": {"name": n, "description": d, "parameters": p}}
            for n, d, p in tools
        ]
        first: list[dict[str, Any]] = [{"role": "user", "content": ask_text}]
        completion = ends.oa.chat.completions.create(
            model=f"fakegem/{source}",
            messages=first,  # type: ignore[arg-type]
            tools=oa_tools,
        )
        message = completion.choices[0].message
        assert message.tool_calls
        [call] = message.tool_calls
        assert call.type == "function" and call.function.name == name
        call_id = call.id
        extra = (call.model_extra or {}).get("extra_content") or {}
        expected = extra.get("google", {}).get("thought_signature") or gemini.SKIP_SIGNATURE
        if source.startswith("replay/"):
            assert expected != gemini.SKIP_SIGNATURE, "the recorded signature reached the client"
        history: Any = [
            *first,
            message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call_id, "content": "France"},
        ]
        ends.clear()
        ends.oa.chat.completions.create(model="fakegem/echo", messages=history, tools=oa_tools)
    else:
        an_tools: Any = [{"name": n, "description": d, "input_schema": p} for n, d, p in tools]
        first = [{"role": "user", "content": ask_text}]
        reply = ends.an.messages.create(
            model=f"fakegem/{source}",
            max_tokens=1024,
            messages=first,  # type: ignore[arg-type]
            tools=an_tools,
        )
        uses = [b for b in reply.content if b.type == "tool_use"]
        assert uses and uses[0].name == name
        expected = gemini.SKIP_SIGNATURE
        history = [
            *first,
            {"role": "assistant", "content": reply.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": uses[0].id, "content": "France"}
                ],
            },
        ]
        ends.clear()
        ends.an.messages.create(
            model="fakegem/echo", max_tokens=1024, messages=history, tools=an_tools
        )
    body = ends.find("echo")["body"]
    model_turn = body["contents"][1]
    assert model_turn["role"] == "model"
    calls = [p for p in model_turn["parts"] if "functionCall" in p]
    assert calls[0]["functionCall"]["name"] == name
    assert calls[0]["thoughtSignature"] == expected
    results = body["contents"][2]["parts"]
    assert results[0]["functionResponse"] == {"name": name, "response": {"output": "France"}}


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_reasoning_sent_back_by_an_openai_client(ends: Ends, upstream: str) -> None:
    """An OpenAI client can send ``reasoning_content`` back, but never a signature (its
    wire has none). An OpenAI upstream gets the message as written; Anthropic and Gemini
    take back only signed reasoning, so it is left out (``ADJUSTMENTS`` "reasoning
    without signature or redacted data", ``gemini.DROPPED`` "ReasoningPart without
    signature")."""
    history: Any = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer", "reasoning_content": "I thought hard"},
        {"role": "user", "content": "second"},
    ]
    ends.clear()
    reply = ends.oa.chat.completions.create(model=f"{PROVIDER[upstream]}/echo", messages=history)
    assert reply.choices[0].message.content == "second"
    body = ends.find("echo")["body"]
    if upstream == "openai":
        assert body["messages"][1]["reasoning_content"] == "I thought hard"
    elif upstream == "anthropic":
        assert _adjustment("reasoning without signature or redacted data") == "dropped"
        assert body["messages"][1] == {"role": "assistant", "content": "answer"}
    else:
        assert _dropped("ReasoningPart without signature") == "dropped"
        assert body["contents"][1] == {"role": "model", "parts": [{"text": "answer"}]}


def test_unsigned_thinking_from_an_anthropic_client_is_not_forwarded(ends: Ends) -> None:
    """Reasoning from an upstream without signatures reaches an Anthropic client as a
    thinking block with an empty signature; sent back to an Anthropic upstream, that
    block is removed (``ADJUSTMENTS`` "same protocol: thinking blocks without a
    signature"), since Anthropic rejects it."""
    assert "removed" in _adjustment("same protocol: thinking blocks without a signature")
    first: Any = [{"role": "user", "content": HELLO}]
    reply = ends.an.messages.create(
        model="fake/think",
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=first,
    )
    assert [(b.type, getattr(b, "signature", None)) for b in reply.content] == [
        ("thinking", ""),
        ("text", None),
    ]
    ends.clear()
    history: Any = [
        *first,
        {"role": "assistant", "content": reply.content},
        {"role": "user", "content": "next"},
    ]
    ends.an.messages.create(model="fakeant/echo", max_tokens=100, messages=history)
    body = ends.find("echo")["body"]
    assert body["messages"][1]["content"] == [{"type": "text", "text": HELLO}]
