"""A request the target cannot serve gets a clear 400 in the client's own protocol,
before any upstream is called: here, an image for a text-only deployment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway

IMAGE = "data:image/png;base64,iVBORw0KGgo="


@pytest.fixture(scope="module")
def gw(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    config = gateway_config(
        fake, models=[{"name": "textonly", "deployments": ["fake/echo"], "images": False}]
    )
    gateway = start_gateway(workdir, config)
    yield gateway
    gateway.proc.stop()


def test_an_image_to_a_text_only_model_is_a_400(gw: Gateway, fake: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key="k", max_retries=0)
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": IMAGE}},
    ]
    fake.clear()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="textonly", messages=[{"role": "user", "content": content}]
        )  # type: ignore[misc,list-item]
    assert info.value.code == "images_not_supported"
    assert "does not accept images" in info.value.message
    assert fake.log() == [], "no upstream was called"
    reply = client.chat.completions.create(
        model="textonly", messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.choices[0].message.content == "hello"


def test_the_same_in_anthropic_shape(gw: Gateway) -> None:
    client = anthropic.Anthropic(base_url=gw.url, api_key="k", max_retries=0)
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(
            model="textonly", max_tokens=10, messages=[{"role": "user", "content": [image]}]
        )  # type: ignore[list-item]
    assert "does not accept images" in str(info.value)
