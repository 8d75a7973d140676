"""The Messages API as agents send it in late 2026, with the official ``anthropic`` SDK,
on every upstream protocol (local/echo, and the fake as OpenAI, Anthropic and Gemini):
a ``system`` message inside ``messages``, adaptive thinking at an effort,
``cache_control`` on blocks, ``context_management``, ``betas=[...]``, and
``messages.count_tokens``; an Anthropic upstream's errors verbatim, another upstream's
context-length error worded as Anthropic words it; per-provider beta flags."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway

pytestmark = pytest.mark.timeout(90)

BETAS = ["mid-conversation-system-2026-04-07", "context-management-2025-06-27"]
PROVIDERS = ["local", "fake", "fakeant", "fakegem", "fakeresp"]
UPSTREAM_PROTOCOL = {
    "fake": "openai",
    "fakeant": "anthropic",
    "fakegem": "gemini",
    "fakeresp": "responses",
}
PROMPT = "what does the relay say"


def conversation() -> list[Any]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                {"type": "text", "text": PROMPT, "cache_control": {"type": "ephemeral"}},
            ],
        },
        {"role": "system", "content": "A note in the middle of the conversation."},
    ]


def agent_kwargs(provider: str) -> dict[str, Any]:
    return {
        "model": f"{provider}/echo",
        "max_tokens": 2000,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": conversation(),
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "betas": BETAS,
    }


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    made = anthropic.Anthropic(base_url=gateway.url, api_key="sk-client", max_retries=0)
    yield made
    made.close()


def upstream_entry(fake: FakeUpstream, start: int, path: str) -> dict[str, Any]:
    found = [e for e in fake.log()[start:] if e["path"].endswith(path)]
    assert found, f"the fake saw no {path}"
    return found[-1]


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "create"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_agents_request_is_answered_on_every_upstream(
    client: anthropic.Anthropic, fake: FakeUpstream, provider: str, streamed: bool
) -> None:
    start = len(fake.log())
    if streamed:
        with client.beta.messages.stream(**agent_kwargs(provider)) as s:
            text = "".join(s.text_stream)
    else:
        message = client.beta.messages.create(**agent_kwargs(provider))
        text = "".join(b.text for b in message.content if b.type == "text")
    assert PROMPT in text
    if provider == "local":
        return
    protocol = UPSTREAM_PROTOCOL[provider]
    paths = {"openai": "/chat/completions", "anthropic": "/messages", "responses": "/responses"}
    entry = upstream_entry(fake, start, paths.get(protocol, ""))
    body = entry["body"]
    headers = {k.lower(): v for k, v in entry["headers"].items()}
    wire = json.dumps(body)
    if protocol == "anthropic":  # as the client wrote it, only model rewritten
        sent = agent_kwargs(provider)
        assert body["messages"] == sent["messages"] and body["model"] == "echo"
        for key in ("system", "thinking", "output_config", "context_management"):
            assert body[key] == sent[key]
        assert headers["anthropic-beta"] == ",".join(BETAS)
        return
    assert "anthropic-beta" not in headers
    assert "cache_control" not in wire and "context_management" not in wire
    if protocol == "openai":
        roles = [m["role"] for m in body["messages"]]
        assert roles[-1] in ("system", "developer"), "the system note stays where it stood"
        assert body["reasoning_effort"] == "high"
    elif protocol == "responses":
        assert body["instructions"] == "Be brief."
        assert body["input"][-1]["role"] == "developer", "the system note stays where it stood"
        assert body["reasoning"]["effort"] == "high"
    else:
        system = json.dumps(body["systemInstruction"])
        assert "Be brief." in system and "in the middle of the conversation" in system
        assert body["generationConfig"]["thinkingConfig"]["thinkingBudget"] > 0


@pytest.mark.parametrize("beta", [True, False], ids=["beta", "plain"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_count_tokens_on_every_upstream(
    client: anthropic.Anthropic, gateway: Gateway, fake: FakeUpstream, provider: str, beta: bool
) -> None:
    start = len(fake.log())
    kwargs: dict[str, Any] = {
        "model": f"{provider}/echo",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "one two three four"}],
    }
    if beta:
        counted = client.beta.messages.with_raw_response.count_tokens(**kwargs, betas=BETAS)
    else:
        counted = client.messages.with_raw_response.count_tokens(**kwargs)
    tokens = counted.parse().input_tokens
    source = counted.headers["x-tokenrelay-count"]
    if provider == "local":
        assert (tokens, source) == (6, "local")  # a word a token, as local/echo's usage
    elif provider in ("fake", "fakeresp"):  # no counting endpoint: the estimate, marked
        assert source == "estimate" and tokens > 6
    else:  # the upstream's own count (the fake's tokenizer: a word a token)
        assert (tokens, source) == (6, "upstream")
        path = "/messages/count_tokens" if provider == "fakeant" else ":countTokens"
        entry = upstream_entry(fake, start, path)
        if provider == "fakeant":
            assert entry["body"] == {**kwargs, "model": "echo"}
            headers = {k.lower(): v for k, v in entry["headers"].items()}
            sent = headers.get("anthropic-beta", "").split(",")  # (the SDK adds its own)
            assert set(BETAS) <= set(sent) if beta else "anthropic-beta" not in headers
    generations = [
        e for e in fake.log()[start:] if e["path"].endswith(("completions", "/messages"))
    ]
    assert generations == [], "a count is never a generation"
    assert "count_tokens model=" in gateway.proc.output()


def test_a_count_is_not_recorded_as_usage(gateway: Gateway, client: anthropic.Anthropic) -> None:
    before = gateway.proc.output().count(" anthropic model=")
    client.messages.count_tokens(model="fakeant/echo", messages=[{"role": "user", "content": "x"}])
    client.messages.count_tokens(model="local/echo", messages=[{"role": "user", "content": "x"}])
    assert gateway.proc.output().count(" anthropic model=") == before  # no exchange line


# --- errors ----------------------------------------------------------------------------------

BILLING = {
    "type": "error",
    "error": {"type": "billing_error", "message": "Your credit balance is too low."},
    "request_id": "req_011CXYZ",
}


def raw_post(gateway: Gateway, body: dict[str, Any], stream: bool = True) -> httpx.Response:
    payload = {"max_tokens": 10, "messages": conversation(), "stream": stream, **body}
    return httpx.post(
        f"{gateway.url}/v1/messages",
        json=payload,
        headers={"anthropic-version": "2023-06-01"},
        timeout=20,
    )


def test_an_anthropic_upstreams_error_reaches_the_client_verbatim(gateway: Gateway) -> None:
    model = "fakeant/echo?status=402&body=" + httpx.QueryParams({"b": json.dumps(BILLING)})[
        "b"
    ].replace("&", "%26")
    response = raw_post(gateway, {"model": model})
    assert response.status_code == 402
    assert response.json() == BILLING


@pytest.mark.parametrize("provider", ["fakeant", "fake", "fakegem"])
def test_prompt_too_long_reads_as_anthropic_words_it(
    client: anthropic.Anthropic, provider: str
) -> None:
    """Claude Code compacts on "prompt is too long": every upstream's context-length
    error reaches an Anthropic client in those words (an Anthropic one as it came)."""
    with pytest.raises(anthropic.BadRequestError) as info:
        client.beta.messages.create(
            **{**agent_kwargs(provider), "model": f"{provider}/echo?too_long=1"}
        )
    assert info.value.status_code == 400
    body: Any = info.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"] == "prompt is too long: 200001 tokens > 200000 maximum"
    if provider == "fakeant":
        assert body["request_id"] == "req_fake_too_long"  # verbatim, not rebuilt


def test_what_the_door_does_not_judge_the_upstream_does(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    """A block the canon cannot read in a user turn: relayed to an Anthropic upstream as
    written (it judges), refused with the field named when it must be translated."""
    odd = [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]
    start = len(fake.log())
    assert raw_post(gateway, {"model": "fakeant/echo", "messages": odd}).status_code == 200
    assert upstream_entry(fake, start, "/messages")["body"]["messages"] == odd
    refused = raw_post(gateway, {"model": "fake/echo", "messages": odd})
    assert refused.status_code == 400
    assert refused.json()["error"]["message"].startswith("messages[0].content[0]")


# --- beta flags per provider ----------------------------------------------------------------


@pytest.fixture(scope="module")
def beta_gateway(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    config = gateway_config(fake)
    ant = next(p for p in config["providers"] if p["name"] == "fakeant")
    config["providers"] += [
        {**ant, "name": "strict", "anthropic_betas": ["context-1m-2025-08-07", "effort-*"]},
        {k: v for k, v in {**ant, "name": "compat"}.items() if k != "anthropic_betas"},
    ]
    gw = start_gateway(workdir, config)
    yield gw
    gw.proc.stop()


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ("fakeant", "context-1m-2025-08-07,effort-2025-11-24,new-flag-2027-01-01"),
        ("strict", "context-1m-2025-08-07,effort-2025-11-24"),
        ("compat", None),  # not Anthropic's own API and nothing configured: none sent
    ],
)
def test_each_provider_gets_the_beta_flags_it_accepts(
    beta_gateway: Gateway, fake: FakeUpstream, provider: str, expected: str | None
) -> None:
    betas = ["context-1m-2025-08-07", "effort-2025-11-24", "new-flag-2027-01-01"]
    start = len(fake.log())
    with anthropic.Anthropic(base_url=beta_gateway.url, api_key="k", max_retries=0) as c:
        message = c.beta.messages.create(
            model=f"{provider}/echo", max_tokens=10, messages=conversation()[:1], betas=betas
        )
    assert PROMPT in "".join(b.text for b in message.content if b.type == "text")
    headers = {k.lower(): v for k, v in upstream_entry(fake, start, "/messages")["headers"].items()}
    assert headers.get("anthropic-beta") == expected
