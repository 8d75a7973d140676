"""The fold of a stream: canonical events in, the assembled response out.

A non-streaming response is this fold of the stream; the server and the Python SDK
both use it, so a streamed and a non-streamed answer can never disagree. Pure, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .events import (
    ChatRequest,
    Error,
    Event,
    Finish,
    ReasoningDelta,
    ReasoningPart,
    Start,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    Usage,
)


@dataclass(slots=True)
class ToolCall:
    id: str = ""
    name: str = ""
    arguments: str = ""
    signature: str | None = None


@dataclass(slots=True)
class Choice:
    """One assembled choice. ``tool_calls`` is ordered by the stream's call index."""

    index: int = 0
    text: str = ""
    reasoning: str = ""
    reasoning_signature: str | None = None
    reasoning_redacted: str | None = None
    tool_calls: dict[int, ToolCall] = field(default_factory=dict)
    finish_reason: str | None = None
    stop_sequence: str | None = None  # the stop sequence that ended it, when known

    def ordered_tool_calls(self) -> list[ToolCall]:
        return [self.tool_calls[i] for i in sorted(self.tool_calls)]


@dataclass(slots=True)
class Fold:
    """Accumulates events; ``add`` is a pure state update with no I/O."""

    id: str = ""
    model: str = ""
    created: int = 0
    extra: dict[str, object] = field(default_factory=dict)
    choices: dict[int, Choice] = field(default_factory=dict)
    usage: Usage | None = None
    error: Error | None = None
    request: ChatRequest | None = None  # what it answers, for bodies that echo it

    def choice(self, index: int) -> Choice:
        found = self.choices.get(index)
        if found is None:
            found = self.choices[index] = Choice(index=index)
        return found

    def add(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            self.choice(event.choice).text += event.text
        elif isinstance(event, ToolCallDelta):
            calls = self.choice(event.choice).tool_calls
            call = calls.get(event.index)
            if call is None:
                call = calls[event.index] = ToolCall()
            if event.id:
                call.id = event.id
            if event.name:
                call.name = event.name
            call.arguments += event.arguments
            if event.signature:
                call.signature = event.signature
        elif isinstance(event, ReasoningDelta):
            choice = self.choice(event.choice)
            choice.reasoning += event.text
            if event.signature:
                choice.reasoning_signature = (choice.reasoning_signature or "") + event.signature
            if event.redacted:
                choice.reasoning_redacted = (choice.reasoning_redacted or "") + event.redacted
        elif isinstance(event, Finish):
            choice = self.choice(event.choice)
            choice.finish_reason = event.reason
            choice.stop_sequence = event.stop_sequence
        elif isinstance(event, Usage):
            self.usage = event
        elif isinstance(event, Start):
            self.id = event.id or self.id
            self.model = event.model or self.model
            self.created = event.created or self.created
            self.extra.update(event.extra)
        elif isinstance(event, Error):
            self.error = event

    def extend(self, events: list[Event]) -> Fold:
        for event in events:
            self.add(event)
        return self

    def chars(self) -> int:
        """The characters of the answer (text, reasoning, tool arguments): what a stream
        of it counts in ``Tally.output_chars``."""
        return sum(
            len(c.text) + len(c.reasoning) + sum(len(t.arguments) for t in c.tool_calls.values())
            for c in self.choices.values()
        )

    def usage_or_estimate(self) -> Usage:
        """The upstream's final counts; otherwise the estimate a stream gives (so a
        streamed and a non-streamed answer report the same). The server sets ``usage``
        to what the request is charged before it encodes the answer."""
        return charged_usage(Tally(usage=self.usage, output_chars=self.chars()))

    def ordered_choices(self) -> list[Choice]:
        if not self.choices:
            return [Choice()]
        return [self.choices[i] for i in sorted(self.choices)]


@dataclass(slots=True)
class Tally:
    """What the gateway keeps of a stream it relays without assembling it: enough for
    the usage record, the metrics and a token estimate when the upstream gives none.
    ``request`` is what was sent upstream (its prompt is estimated only when needed)."""

    usage: Usage | None = None
    finish_reason: str | None = None
    error: Error | None = None
    output_chars: int = 0
    started: bool = False  # a content frame (not only keep-alive) reached the encoder
    request: ChatRequest | None = None
    # the client protocol's own object of the finished answer (a Responses ``response``),
    # set once at the end by protocols that keep state; None for the others
    final: dict[str, Any] | None = None
    # the id the answer's object must carry, chosen before it runs (a Responses
    # ``background`` response, returned at once); None: the encoder picks one
    response_id: str | None = None


CHARS_PER_TOKEN = 4
"""The one estimate of tokens from characters (the usual rule of thumb for English text
with BPE tokenizers), for prompts and answers alike, rounded up."""


def estimate_tokens(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


def prompt_chars(request: ChatRequest) -> int:
    """The characters of what a request sends: every message's text, reasoning, tool
    calls and results, and the tool definitions."""
    n = 0
    for message in request.messages:
        for part in message.parts:
            if isinstance(part, TextPart | ReasoningPart):
                n += len(part.text)
            elif isinstance(part, ToolCallPart):
                n += len(part.name) + len(part.arguments)
            elif isinstance(part, ToolResultPart):
                n += sum(len(c.text) for c in part.content if isinstance(c, TextPart))
    for tool in request.tools or ():
        n += len(tool.name) + len(tool.description or "") + len(str(tool.parameters))
    return n


def charged_usage(tally: Tally) -> Usage:
    """What a request is charged, recorded and reported, one rule for every ending:

    - the upstream's own counts when it sent its final ones (the answer was whole);
    - otherwise (stopped, dropped, cut off, or an upstream that counts nothing) what
      the upstream did count — input counts come first on most upstreams (Anthropic's
      ``message_start``, Gemini's first chunk) — with the rest estimated from what was
      sent (the prompt) and what was streamed (text, reasoning, tool arguments; never
      less than an output count the upstream already gave), marked ``estimated``.

    Computed once, when the request ends: nothing is counted per chunk but the
    characters the encoders already add up."""
    usage = tally.usage
    if usage is not None and not usage.partial and not usage.estimated:
        return usage
    output = estimate_tokens(tally.output_chars)
    request = tally.request
    prompt = estimate_tokens(prompt_chars(request)) if request is not None else 0
    if usage is None:
        return Usage(input=prompt, output=output, estimated=True)
    return Usage(
        input=usage.input or prompt,
        output=max(usage.output, output),
        cached=usage.cached,
        reasoning=usage.reasoning,
        cache_write=usage.cache_write,
        cache_write_1h=usage.cache_write_1h,
        estimated=True,
    )
