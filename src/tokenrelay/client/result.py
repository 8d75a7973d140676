"""The assembled answer: what ``stream.final()`` and ``chat.create()`` return.

Built from a ``tokenrelay.fold.Fold``, the fold the gateway itself uses for
non-streaming answers. Equality compares the answer (text, reasoning, tool calls,
finish reasons, usage), not the identifiers of the exchange that produced it, so a
streamed and a non-streamed answer to the same prompt compare equal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..events import Usage
from ..fold import Fold

__all__ = ["ChatResult", "Choice", "ToolCall"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model made; ``arguments`` is the JSON text as the model wrote it."""

    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> Any:
        """``arguments`` decoded (raises ``ValueError`` if the model wrote broken JSON)."""
        return json.loads(self.arguments) if self.arguments.strip() else {}


@dataclass(frozen=True, slots=True)
class Choice:
    """One assembled choice (there is one unless the request asked for ``n`` > 1)."""

    index: int = 0
    text: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    reasoning_signature: str | None = None
    stop_sequence: str | None = None  # the stop sequence that ended it, when the wire says


@dataclass(frozen=True, slots=True)
class ChatResult:
    """The assembled message. ``text``, ``reasoning``, ``tool_calls`` and
    ``finish_reason`` are those of the first choice; ``choices`` has them all.
    ``finish_reason`` is ``None`` when the stream was stopped before it finished."""

    choices: tuple[Choice, ...]
    usage: Usage | None = None
    id: str = field(default="", compare=False)
    model: str = field(default="", compare=False)
    request_id: str | None = field(default=None, compare=False)
    stream_id: str | None = field(default=None, compare=False)

    @property
    def text(self) -> str:
        """The first choice's text."""
        return self.choices[0].text

    @property
    def reasoning(self) -> str:
        """The first choice's reasoning (empty when the model showed none)."""
        return self.choices[0].reasoning

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The first choice's tool calls, in the order of their index."""
        return self.choices[0].tool_calls

    @property
    def finish_reason(self) -> str | None:
        """``stop``, ``length``, ``tool_calls``, ``content_filter`` or ``error``."""
        return self.choices[0].finish_reason

    @property
    def stop_sequence(self) -> str | None:
        """Which of the request's stop sequences ended the first choice, when the wire
        says so (Anthropic's does; OpenAI's finish reason is ``stop`` either way)."""
        return self.choices[0].stop_sequence

    @classmethod
    def from_fold(
        cls, fold: Fold, request_id: str | None = None, stream_id: str | None = None
    ) -> ChatResult:
        """The result of a fold (the one ``tokenrelay.fold.Fold``)."""
        choices = tuple(
            Choice(
                index=c.index,
                text=c.text,
                reasoning=c.reasoning,
                tool_calls=tuple(
                    ToolCall(t.id, t.name, t.arguments) for t in c.ordered_tool_calls()
                ),
                finish_reason=c.finish_reason,
                reasoning_signature=c.reasoning_signature,
                stop_sequence=c.stop_sequence,
            )
            for c in fold.ordered_choices()
        )
        return cls(choices, fold.usage, fold.id, fold.model, request_id, stream_id)
