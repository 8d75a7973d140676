"""The built-in ``local`` provider: models that need no key and no network.

``local/echo`` streams the last user message back in word-sized deltas at a steady pace,
honours ``max_tokens`` (finish reason ``length``) and stop sequences (the answer ends
before the first one, as a model's would) and reports usage (one token per word). When
the request offers tools and the last user message (its last text part, if it has
several) reads ``/call NAME {json}`` (or has it from a line on), it streams a call to tool NAME with those
arguments instead, so tool use can be exercised with no keys; when the last message is a tool result, it echoes the result.

``local/embed`` (``POST /v1/embeddings`` only) turns each text into a deterministic
unit vector by feature hashing: each lower-cased word adds +1 or -1 (a bit of its
BLAKE2b hash) at the index its hash picks among ``dimensions`` (default 256, at most
4096), and the sum is scaled to unit length (words that cancel out put +1 at the
index of their joined hash). The same text always gets the same
vector, and texts sharing words point the same way, so retrieval can be tested with
no keys. Usage: one token per word, as ``local/echo`` counts.

It takes the same path through the gateway as every remote provider.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator

import msgspec

from ..affinity import Conversation
from ..embeddings import EmbeddingAnswer, EmbeddingRequest, normalized
from ..events import (
    ChatRequest,
    Event,
    Finish,
    GatewayError,
    Message,
    Start,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolResultPart,
    Usage,
)
from ..ids import token_hex
from ..sse import ServerSentEvent
from ..stops import cut_at_stop

_WORD = re.compile(r"\s*\S+\s*")
EMBED_DIMENSIONS = 256
MAX_EMBED_DIMENSIONS = 4096
_CALL = re.compile(r"^/call\s+([A-Za-z0-9_.\-]+)\s*(.*)$", re.S)


def count_tokens(text: str) -> int:
    """The local models' token: one word."""
    return len(text.split())


def embed_text(text: str, dimensions: int = EMBED_DIMENSIONS) -> list[float]:
    """``local/embed``'s vector of ``text`` (module docstring)."""
    vector = [0.0] * dimensions
    words = text.lower().split()
    for word in words:
        vector[_hash(word) % dimensions] += -1.0 if _hash(word) >> 63 else 1.0
    if words and not any(vector):  # words that cancel out (few dimensions): still a unit
        vector[_hash(" ".join(words)) % dimensions] = 1.0  # vector, of the words alone
    return normalized(vector)


def _hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")


def _not_this(model: str, use: str) -> GatewayError:
    return GatewayError(
        "invalid_request",
        f"The model 'local/{model}' does not serve this endpoint; use it on {use}.",
        code="endpoint_not_supported",
        param="model",
    )


class LocalUpstream:
    protocol: str | None = None
    key_id: str | None = None

    def __init__(self, events: list[Event], delay: float) -> None:
        self._events = events
        self._delay = delay
        self._closed = False

    async def frames(self) -> AsyncIterator[list[ServerSentEvent]]:
        raise NotImplementedError("the local provider produces events, not frames")
        yield []  # pragma: no cover

    async def payloads(self) -> AsyncIterator[list[bytes]]:
        raise NotImplementedError("the local provider produces events, not frames")
        yield []  # pragma: no cover

    async def named(self) -> AsyncIterator[list[tuple[bytes | None, bytes]]]:
        raise NotImplementedError("the local provider produces events, not frames")
        yield []  # pragma: no cover

    async def events(self) -> AsyncIterator[list[Event]]:
        # Start with the first piece at once; then one piece per tick.
        events = self._events
        i = 0
        while i < len(events) and not self._closed:
            batch = [events[i]]
            i += 1
            while i < len(events) and not isinstance(events[i], TextDelta | ToolCallDelta):
                batch.append(events[i])
                i += 1
            if isinstance(batch[0], TextDelta | ToolCallDelta) and self._delay > 0:
                await asyncio.sleep(self._delay)
            yield batch

    async def aclose(self) -> None:
        self._closed = True


class LocalProvider:
    """``local/echo``; ``rate`` is deltas per second (0 = as fast as possible)."""

    name = "local"

    def __init__(self, rate: float = 30.0) -> None:
        self.rate = rate

    def models(self) -> list[str]:
        return ["echo", "embed"]

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingAnswer:
        if model != "embed":
            raise _not_this(model, "/v1/chat/completions or /v1/completions")
        dimensions = request.dimensions or EMBED_DIMENSIONS
        if dimensions > MAX_EMBED_DIMENSIONS:
            raise GatewayError(
                "invalid_request",
                f"'dimensions' may be at most {MAX_EMBED_DIMENSIONS} for local/embed.",
                param="dimensions",
            )
        texts = request.texts()
        vectors = [embed_text(t, dimensions) for t in texts]
        return EmbeddingAnswer(Usage(input=sum(count_tokens(t) for t in texts)), vectors)

    async def open(
        self, request: ChatRequest, model: str, conversation: Conversation | None = None
    ) -> LocalUpstream:
        if model == "embed":
            raise _not_this(model, "/v1/embeddings")
        if model != "echo":
            raise GatewayError(
                "not_found", f"The model 'local/{model}' does not exist", code="model_not_found"
            )
        if request.source is not None:  # the canon is what this provider reads
            request.source.check_translatable()
        text = request.last_user_text()
        prompt = sum(
            count_tokens(p.text)
            for m in request.messages
            for p in m.parts
            if isinstance(p, TextPart)
        )
        events: list[Event] = [Start(f"local-{token_hex(12)}", "local/echo", int(time.time()))]
        # system messages between the turns (Claude Code puts one after the last user
        # turn) are not the turn being answered
        turns = [m for m in request.messages if m.role != "system"]
        last = turns[-1] if turns else None
        if last is not None and last.role == "tool":
            # after tool results, echo them: an agent loop ends instead of calling the
            # same tool again
            results: list[Message] = []
            for message in reversed(turns):
                if message.role != "tool":
                    break
                results.insert(0, message)
            text = " ".join(
                t.text
                for m in results
                for p in m.parts
                if isinstance(p, ToolResultPart)
                for t in p.content
                if isinstance(t, TextPart)
            )
        call = None
        if request.tools and last is not None and last.role == "user":
            # the last text part: an agent (Claude Code) puts context blocks before it
            said = [p.text for p in last.parts if isinstance(p, TextPart) and p.text.strip()]
            # (or a line of it: a prompt starting with "/" is an agent's slash command)
            said_last = said[-1].strip() if said else ""
            at = said_last.find("\n/call")
            call = _CALL.match(said_last if at < 0 else said_last[at + 1 :])
        if call:
            events.extend(self._tool_call(call.group(1), call.group(2)))
            output = count_tokens(call.group(2)) + 1
        else:
            words, stopped_by = cut_at_stop(_WORD.findall(text), request.stop or ())
            limit = request.max_tokens
            cut = limit is not None and len(words) > limit
            if cut:
                words = words[:limit]
                stopped_by = None
            events.extend(TextDelta(w) for w in words)
            events.append(Finish("length" if cut else "stop", stop_sequence=stopped_by))
            output = len(words)
        events.append(Usage(input=prompt, output=output))
        return LocalUpstream(events, 1.0 / self.rate if self.rate > 0 else 0.0)

    def _tool_call(self, name: str, arguments: str) -> list[Event]:
        arguments = arguments.strip() or "{}"
        try:
            msgspec.json.decode(arguments)
        except msgspec.DecodeError as exc:
            raise GatewayError(
                "invalid_request", f"/call arguments must be JSON: {exc}", param="messages"
            ) from None
        call_id = f"call_{token_hex(12)}"
        pieces = [arguments[i : i + 8] for i in range(0, len(arguments), 8)]
        events: list[Event] = [ToolCallDelta(0, call_id, name, pieces[0])]
        events.extend(ToolCallDelta(0, arguments=p) for p in pieces[1:])
        events.append(Finish("tool_calls"))
        return events

    async def aclose(self) -> None:
        return None
