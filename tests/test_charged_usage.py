"""``fold.charged_usage``, the one rule for what a request is charged (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tokenrelay.events import (
    ChatRequest,
    Message,
    TextPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
    Usage,
)
from tokenrelay.fold import CHARS_PER_TOKEN, Tally, charged_usage, estimate_tokens, prompt_chars

counts = st.integers(0, 10**6)
usages = st.builds(
    Usage, input=counts, output=counts, cached=counts, reasoning=counts, partial=st.booleans()
)
texts = st.text(max_size=200)


def request(user: str, tool_args: str = "", result: str = "") -> ChatRequest:
    messages = [Message("user", [TextPart(user)])]
    if tool_args or result:
        messages.append(Message("assistant", [ToolCallPart("c1", "f", tool_args)]))
        messages.append(Message("tool", [ToolResultPart("c1", [TextPart(result)])]))
    tools = [Tool("f", "does f", {"type": "object"})] if tool_args else None
    return ChatRequest(model="m", messages=messages, tools=tools)


@given(usages, st.integers(0, 10**6), texts)
def test_final_counts_are_charged_as_the_upstream_gave_them(
    usage: Usage, chars: int, user: str
) -> None:
    usage.partial = False
    assert charged_usage(Tally(usage=usage, output_chars=chars, request=request(user))) is usage


@given(st.none() | usages, st.integers(0, 10**6), texts, texts, texts)
def test_anything_less_is_completed_by_estimates_and_marked(
    usage: Usage | None, chars: int, user: str, args: str, result: str
) -> None:
    if usage is not None:
        usage.partial = True
    sent = request(user, args, result)
    got = charged_usage(Tally(usage=usage, output_chars=chars, request=sent))
    prompt = -(-prompt_chars(sent) // CHARS_PER_TOKEN)
    assert got.estimated
    assert prompt_chars(sent) >= len(user) + len(args) + len(result)
    assert got.input == ((usage.input if usage is not None else 0) or prompt)
    assert got.output == max(usage.output if usage is not None else 0, estimate_tokens(chars))
    assert got.output * CHARS_PER_TOKEN >= chars  # never less than what streamed
    if usage is not None:
        assert (got.cached, got.reasoning) == (usage.cached, usage.reasoning)
    more = charged_usage(Tally(usage=usage, output_chars=chars + 1, request=sent))
    assert more.output >= got.output  # more streamed is never charged less
