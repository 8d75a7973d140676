"""The protocol registry gives the built-in protocols the routes and the request
classification they had when ``server/`` listed them by hand."""

from __future__ import annotations

import pytest

from tokenrelay.protocols.registry import REGISTRY

PATHS = [
    "/v1/chat/completions",
    "/chat/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/anthropic/v1/messages",
    "/anthropic/v1/models",
    "/anthropic/v1/streams/s1",
    "/v1/models",
    "/models",
    "/v1/streams/s1",
    "/nothing",
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("headers", [{}, {"anthropic-version": "2023-06-01"}])
def test_a_request_is_in_the_protocol_it_always_was(path: str, headers: dict[str, str]) -> None:
    anthropic = path.startswith(("/anthropic/", "/v1/messages")) or "anthropic-version" in headers
    assert REGISTRY.ingress().protocol_for(path, headers).name == (
        "anthropic" if anthropic else "openai"
    )


def test_the_routes_are_the_ones_listed_by_hand_before() -> None:
    ingress = REGISTRY.ingress()
    assert set(ingress.chat) == {
        ("POST", "/v1/chat/completions"),
        ("POST", "/chat/completions"),
        ("POST", "/v1/messages"),
        ("POST", "/anthropic/v1/messages"),
        ("POST", "/v1/responses"),
        ("POST", "/responses"),
        ("POST", "/v1/completions"),  # the legacy Completions API (protocols/completions/)
        ("POST", "/completions"),
    }
    assert set(ingress.paths("models")) == {
        "/v1/models",
        "/models",
        "/anthropic/v1/models",
        "/v1beta/models",
    }
    assert ingress.prefixes() == ["/anthropic"]


def test_the_roles() -> None:
    assert [p.name for p in REGISTRY.clients()] == [
        "openai",
        "anthropic",
        "gemini",
        "openai-responses",
        "openai-completions",
    ]
    # completions: an endpoint of OpenAI-compatible upstreams, not a provider protocol
    assert REGISTRY.upstream_names() == ["openai", "anthropic", "gemini", "openai-responses"]
    with pytest.raises(ValueError, match="registered already"):
        REGISTRY.register(REGISTRY.get("openai"))


GEMINI_PATHS = [
    ("/v1beta/models/local/echo:streamGenerateContent", "streamGenerateContent", "local/echo"),
    ("/v1beta/models/models/local/echo:generateContent", "generateContent", "models/local/echo"),
    ("/v1/models/gemini-2.5-pro:generateContent", "generateContent", "gemini-2.5-pro"),
    ("/v1beta/models/a:b/c:streamGenerateContent", "streamGenerateContent", "a:b/c"),
]


@pytest.mark.parametrize(("path", "method", "model"), GEMINI_PATHS)
def test_a_model_with_slashes_routes_by_head_and_tail(path: str, method: str, model: str) -> None:
    ingress = REGISTRY.ingress()
    assert ("POST", path) not in ingress.chat  # not in the fixed table: matched by shape
    assert path.startswith(ingress.heads)
    match = ingress.match_chat(path)
    assert match is not None and match[0].name == "gemini"
    assert match[1] == {"method": method, "model": model}
    assert ingress.protocol_for(path, {}).name == "gemini"
    params = ingress.params(path, b"alt=sse&key=k")
    assert params == {"method": method, "model": model, "alt": "sse", "key": "k"}


@pytest.mark.parametrize(
    "path", ["/v1/models/local/echo", "/v1/models", "/v1beta/models:generateContent", "/v1/x"]
)
def test_other_paths_are_no_gemini_chat(path: str) -> None:
    ingress = REGISTRY.ingress()
    assert ingress.match_chat(path) is None and ingress.params(path, b"") is None
    if path.startswith("/v1/"):
        assert ingress.protocol_for(path, {}).name == "openai"  # /v1/models/{id} stays OpenAI's
