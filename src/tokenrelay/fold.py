"""The fold of a stream: canonical events in, the assembled response out.

A non-streaming response is this fold of the stream; the server and the Python SDK
both use it, so a streamed and a non-streamed answer can never disagree. Pure, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .events import (
    Error,
    Event,
    Finish,
    ReasoningDelta,
    Start,
    TextDelta,
    ToolCallDelta,
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

    def usage_or_estimate(self) -> Usage:
        """The upstream's counts; when it counted nothing, the estimate a stream gives
        (so a streamed and a non-streamed answer report the same)."""
        if self.usage is not None:
            return self.usage
        chars = sum(
            len(c.text) + len(c.reasoning) + sum(len(t.arguments) for t in c.tool_calls.values())
            for c in self.choices.values()
        )
        return estimate_usage(Tally(output_chars=chars))

    def ordered_choices(self) -> list[Choice]:
        if not self.choices:
            return [Choice()]
        return [self.choices[i] for i in sorted(self.choices)]


@dataclass(slots=True)
class Tally:
    """What the gateway keeps of a stream it relays without assembling it: enough for
    the usage record, the metrics and a token estimate when the upstream gives none."""

    usage: Usage | None = None
    finish_reason: str | None = None
    error: Error | None = None
    output_chars: int = 0
    started: bool = False  # a content frame (not only keep-alive) reached the encoder


CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text with BPE tokenizers


def estimate_usage(tally: Tally) -> Usage:
    """Usage when the upstream reported none: output tokens from the characters that
    were streamed, marked as an estimate (never billed as exact)."""
    output = -(-tally.output_chars // CHARS_PER_TOKEN)
    return Usage(output=output, estimated=True)
