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
        ("POST", "/v1/completions"),  # the legacy Completions API (protocols/completions/)
        ("POST", "/completions"),
    }
    assert set(ingress.paths("models")) == {"/v1/models", "/models", "/anthropic/v1/models"}
    assert ingress.prefixes() == ["/anthropic"]


def test_the_roles() -> None:
    assert [p.name for p in REGISTRY.clients()] == ["openai", "anthropic", "openai-completions"]
    # an endpoint of OpenAI-compatible upstreams, not a protocol a provider may speak
    assert REGISTRY.upstream_names() == ["openai", "anthropic", "gemini"]
    with pytest.raises(KeyError):
        REGISTRY.client("gemini")
    with pytest.raises(ValueError, match="registered already"):
        REGISTRY.register(REGISTRY.get("openai"))
