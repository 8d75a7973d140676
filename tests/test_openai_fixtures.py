"""Every recorded OpenAI-wire stream, replayed by the fake upstream through the gateway
and consumed by the official ``openai`` SDK, arrives whole: text, reasoning, tool calls,
finish reason and usage equal what the recording holds, and fields the gateway does not
know reach the client unchanged."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from support.paths import fixture_files, fixtures_dir
from support.procs import Gateway

OPENAI_WIRE = [
    p
    for p in fixture_files()
    if p.parent.name in ("openai", "azure", "deepseek", "openrouter") and p.name.startswith("chat_")
]


@dataclass
class Expected:
    text: str = ""
    reasoning: str = ""
    calls: dict[int, dict[str, str]] = field(default_factory=dict)
    finish: str | None = None
    usage: dict[str, Any] | None = None
    error: str | None = None
    extra_keys: set[str] = field(default_factory=set)


def expected_from_recording(path: Path) -> Expected:
    """Walk the raw recorded JSON chunks (no tokenrelay code involved)."""
    exp = Expected()
    for block in path.read_bytes().decode().replace("\r\n", "\n").split("\n\n"):
        data = "".join(line[6:] for line in block.split("\n") if line.startswith("data: "))
        if not data or data == "[DONE]":
            continue
        chunk = json.loads(data)
        exp.extra_keys |= {k for k, v in chunk.items() if v is not None} & {
            "system_fingerprint",
            "obfuscation",
            "provider",
            "service_tier",
        }
        if chunk.get("error"):
            exp.error = chunk["error"]["message"]
            break  # the SDK raises here
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            exp.text += delta.get("content") or ""
            exp.reasoning += delta.get("reasoning_content") or delta.get("reasoning") or ""
            for call in delta.get("tool_calls") or []:
                slot = exp.calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                slot["id"] = call.get("id") or slot["id"]
                fn = call.get("function") or {}
                slot["name"] = fn.get("name") or slot["name"]
                slot["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                exp.finish = choice["finish_reason"]
        if chunk.get("usage"):
            exp.usage = chunk["usage"]
    return exp


@pytest.mark.parametrize("path", OPENAI_WIRE, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recorded_stream_through_the_gateway(gateway: Gateway, path: Path) -> None:
    fixtures_dir()
    exp = expected_from_recording(path)
    model = f"fake/replay/{path.parent.name}/{path.stem}"
    client = openai.OpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0)
    text, reasoning, finish, usage = "", "", None, None
    calls: dict[int, dict[str, str]] = {}
    models_seen, extra_keys = set(), set()
    error: str | None = None
    try:
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "replay"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            models_seen.add(chunk.model)
            extra_keys |= set((chunk.model_extra or {}).keys()) | {
                k
                for k in ("system_fingerprint", "service_tier", "obfuscation")
                if getattr(chunk, k, None) is not None
            }
            if chunk.usage is not None:
                usage = chunk.usage.model_dump(exclude_none=True)
            for choice in chunk.choices:
                delta = choice.delta
                text += delta.content or ""
                extra = delta.model_extra or {}
                reasoning += extra.get("reasoning_content") or extra.get("reasoning") or ""
                for call in delta.tool_calls or []:
                    slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                    slot["id"] = call.id or slot["id"]
                    if call.function is not None:
                        slot["name"] = call.function.name or slot["name"]
                        slot["arguments"] += call.function.arguments or ""
                if choice.finish_reason:
                    finish = choice.finish_reason
    except openai.APIError as exc:
        error = exc.message

    assert text == exp.text
    assert reasoning == exp.reasoning
    assert calls == exp.calls
    for call in calls.values():
        json.loads(call["arguments"])  # complete JSON
    assert finish == exp.finish
    assert error == exp.error
    if exp.error is None:
        assert usage is not None
        if exp.usage is not None:
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                assert usage[key] == exp.usage[key]
        else:  # the upstream counted nothing: the gateway says its figure is an estimate
            assert usage["estimated"] is True
            assert usage["completion_tokens"] == -(-len(exp.text + exp.reasoning) // 4)
    assert models_seen <= {model}, "only the model name is rewritten, to the one asked for"
    assert exp.extra_keys <= extra_keys, "fields the gateway does not know are kept"


def test_usage_frame_is_kept_from_a_client_that_did_not_ask(gateway: Gateway) -> None:
    """The gateway always asks the upstream for usage (to bill it); a client that did
    not ask does not get the extra empty-choices frame."""
    fixtures_dir()
    client = openai.OpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="fake/replay/openai/chat_text_include_usage",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
        )
    )
    assert chunks and all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
