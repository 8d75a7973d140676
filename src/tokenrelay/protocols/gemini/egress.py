"""Gemini ``generateContent``, client side: what the gateway answers a Gemini client
(``google-genai``, Gemini CLI) with.

- ``GeminiStreamEncoder``: canonical events -> ``streamGenerateContent`` chunks, each
  a whole ``GenerateContentResponse`` as Gemini sends them: text parts as they come,
  thought summaries as ``thought: true`` parts, a thought signature on the text part it
  came with (or on its ``functionCall``), every call whole in one part, ``usageMetadata``
  with the counts known so far on every chunk (calls go out once whole, at the
  choice's finish); the chunk carrying ``finishReason`` is the last and is written by
  ``close()``, when the final counts are known.
- ``GeminiPassthrough``: a Gemini upstream's chunks forwarded as written, only
  ``modelVersion`` rewritten to the name the client asked for.
- ``encode_response``: the fold as one ``GenerateContentResponse``.
- errors as Google writes them: ``{"error": {"code", "message", "status"}}``.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from ...events import (
    Error,
    Event,
    Finish,
    GatewayError,
    ReasoningDelta,
    Start,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from ...fold import Fold, Tally, charged_usage
from ...sse import encode as sse_encode
from ..base import InBandEnd
from .stream import FINISH_FROM_WIRE, MALFORMED, TRUNCATED, error_from_wire, usage_from_wire

name = "gemini"

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.decode

FINISH_TO_WIRE: dict[str, str] = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "tool_calls": "STOP",  # Gemini ends a turn of function calls with STOP
    "content_filter": "SAFETY",
    "error": "OTHER",
}

STATUS_WORDS: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
"""HTTP status -> ``google.rpc.Code`` name, the ``status`` of Google's error body."""


CLIENT_DROPPED: list[tuple[str, str, str]] = [
    (
        "from a Gemini client: safetySettings, cachedContent, responseModalities, labels, ...",
        "kept for a Gemini upstream only; left out for the others",
        "the canon has no slot for them",
    ),
    (
        "from a Gemini client: built-in tools (googleSearch, codeExecution, ...), "
        "executableCode parts",
        "400 naming the field for a non-Gemini upstream",
        "no other protocol can take them",
    ),
    (
        "from a Gemini client: functionCall / functionResponse without id",
        "ids made up (call_gemini_N); each result takes the earliest unanswered call of its name",
        "Gemini pairs results with calls by name and order",
    ),
    ("from a Gemini client: thinkingLevel", "-> reasoning_effort", "the canon's effort word"),
    (
        "to a Gemini client: tool call ids",
        "not sent",
        "Gemini pairs results by name; an id from elsewhere means nothing to it",
    ),
    (
        "to a Gemini client: streamed tool call fragments",
        "each call sent whole in one functionCall part, on the turn's last chunk",
        "Gemini sends every call whole",
    ),
    (
        "to a Gemini client: Anthropic redacted thinking",
        "dropped",
        "Gemini has no part for it",
    ),
]
"""What serving a Gemini client from another protocol's upstream leaves out or adjusts."""


def status_word(status: int) -> str:
    return STATUS_WORDS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")


def usage_to_wire(usage: Usage) -> dict[str, Any]:
    """``Usage`` -> ``usageMetadata`` (Gemini counts thoughts apart from the answer)."""
    wire: dict[str, Any] = {
        "promptTokenCount": usage.input,
        "candidatesTokenCount": max(0, usage.output - usage.reasoning),
        "totalTokenCount": usage.input + usage.output,
    }
    if usage.reasoning:
        wire["thoughtsTokenCount"] = usage.reasoning
    if usage.cached:
        wire["cachedContentTokenCount"] = usage.cached
    return wire


def error_object(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": status_word(status)}}


def error_body(error: GatewayError) -> dict[str, Any]:
    """Google's error body; a Gemini upstream's own one as it came."""
    if error.upstream is not None and error.upstream[0] == name:
        return error.upstream[1]
    return error_object(error.status, error.message)


def error_frame(error: Error) -> bytes:
    """The in-stream error chunk (Gemini's stream carries ``{"error": {...}}``)."""
    return sse_encode(_json_encode(error_object(error.status, error.message)))


def _args(arguments: str) -> dict[str, Any]:
    try:
        value = _json_decode(arguments) if arguments.strip() else {}
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _call_part(name_: str, arguments: str, signature: str | None) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": name_, "args": _args(arguments)}}
    if signature:
        part["thoughtSignature"] = signature
    return part


class _Candidate:
    """One choice's state: the signature waiting for its text part, calls being
    assembled (their fragments concatenate), the finish reason."""

    __slots__ = ("calls", "finish", "signature")

    def __init__(self) -> None:
        self.signature: str | None = None
        self.calls: dict[int, list[Any]] = {}  # index -> [name, arguments, signature]
        self.finish: str | None = None

    def call_parts(self) -> list[dict[str, Any]]:
        parts = [_call_part(n, a, s) for n, a, s in (self.calls[i] for i in sorted(self.calls))]
        self.calls.clear()
        return parts


class GeminiStreamEncoder(InBandEnd):
    """Canonical events -> ``streamGenerateContent`` chunks (module docstring)."""

    _error_frame = staticmethod(error_frame)

    def __init__(self, model: str, tally: Tally) -> None:
        self.tally = tally
        self.ended = False
        self._model = model
        self._id = ""
        self._usage: Usage | None = None
        self._choices: dict[int, _Candidate] = {}

    def _choice(self, index: int) -> _Candidate:
        state = self._choices.get(index)
        if state is None:
            state = self._choices[index] = _Candidate()
        return state

    def _chunk(self, candidates: list[dict[str, Any]], usage: Usage | None) -> bytes:
        body: dict[str, Any] = {"candidates": candidates}
        if usage is not None:
            body["usageMetadata"] = usage_to_wire(usage)
        body["modelVersion"] = self._model
        body["responseId"] = self._id
        return sse_encode(_json_encode(body))

    def encode(self, events: list[Event]) -> list[bytes]:
        tally = self.tally
        parts: dict[int, list[dict[str, Any]]] = {}
        for event in events:
            if isinstance(event, TextDelta):
                if not event.text:
                    continue
                tally.output_chars += len(event.text)
                state = self._choice(event.choice)
                part: dict[str, Any] = {"text": event.text}
                if state.signature:
                    part["thoughtSignature"] = state.signature
                    state.signature = None
                parts.setdefault(event.choice, []).append(part)
            elif isinstance(event, ReasoningDelta):
                state = self._choice(event.choice)
                if event.text:
                    tally.output_chars += len(event.text)
                    part = {"text": event.text, "thought": True}
                    if event.signature:
                        part["thoughtSignature"] = event.signature
                    parts.setdefault(event.choice, []).append(part)
                elif event.signature:
                    state.signature = (state.signature or "") + event.signature
            elif isinstance(event, ToolCallDelta):
                tally.output_chars += len(event.arguments)
                calls = self._choice(event.choice).calls
                call = calls.get(event.index)
                if call is None:
                    calls[event.index] = [event.name or "", event.arguments, event.signature]
                else:
                    call[0] = call[0] or event.name or ""
                    call[1] += event.arguments
                    call[2] = call[2] or event.signature
            elif isinstance(event, Finish):  # the calls are whole now: they go out
                state = self._choice(event.choice)
                state.finish = event.reason
                if state.calls:
                    parts.setdefault(event.choice, []).extend(state.call_parts())
                if not event.choice:
                    tally.finish_reason = event.reason
            elif isinstance(event, Usage):
                tally.usage = self._usage = event
            elif isinstance(event, Start):
                self._id = self._id or event.id
            elif isinstance(event, Error):  # what came before it in the batch goes first
                tally.error = event
                self.ended = True
                return [*self._parts(parts), error_frame(event)]
        return self._parts(parts)

    def _parts(self, parts: dict[int, list[dict[str, Any]]]) -> list[bytes]:
        if not parts:
            return []
        if not self._id:
            self._id = f"gemini-{id(self):x}"
        candidates = [
            {"content": {"parts": p, "role": "model"}, "index": i} for i, p in sorted(parts.items())
        ]
        self.tally.started = True
        return [self._chunk(candidates, self._usage)]

    def close(self, cancelled: bool = False) -> list[bytes]:
        """The last chunk: the calls, each choice's ``finishReason``, the counts the
        request is charged. A stop by the user ends the same way (``STOP``)."""
        if self.ended:
            return []
        self.ended = True
        choices = self._choices or {0: _Candidate()}
        candidates: list[dict[str, Any]] = []
        for i, state in sorted(choices.items()):
            parts = state.call_parts()
            if state.signature:  # a signature no text part came to carry
                parts.insert(0, {"text": "", "thought": True, "thoughtSignature": state.signature})
            reason = FINISH_TO_WIRE.get(state.finish or "stop", "OTHER")
            candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
            candidate["finishReason"] = reason
            candidate["index"] = i
            candidates.append(candidate)
        if not self._id:
            self._id = f"gemini-{id(self):x}"
        self.tally.finish_reason = self.tally.finish_reason or "stop"
        return [self._chunk(candidates, charged_usage(self.tally))]


# --- the same-protocol passthrough ---------------------------------------------------

_MODEL = re.compile(rb'("modelVersion"\s*:\s*)"(?:[^"\\]|\\.)*"')


class _PartView(msgspec.Struct):
    text: str | None = None
    functionCall: dict[str, Any] | None = None


class _ContentView(msgspec.Struct):
    parts: list[_PartView] | None = None


class _CandidateView(msgspec.Struct):
    content: _ContentView | None = None
    finishReason: str | None = None
    index: int = 0


class _ChunkView(msgspec.Struct):
    candidates: list[_CandidateView] | None = None
    usageMetadata: dict[str, Any] | None = None
    error: Any = None


_view = msgspec.json.Decoder(_ChunkView).decode


class GeminiPassthrough(InBandEnd):
    """A Gemini upstream's chunks -> the same chunks for a Gemini client, each as the
    upstream wrote it but for ``modelVersion`` (the name the client asked for). Each is
    read through a small view that fills the tally; one that is not JSON ends the
    stream with an error chunk instead of reaching the client's parser."""

    payloads = True  # Gemini frames carry nothing but data

    _error_frame = staticmethod(error_frame)

    def __init__(self, model: str, tally: Tally) -> None:
        self.tally = tally
        self.ended = False
        self._model = _json_encode(model)
        self._open: set[int] = set()  # choices seen without their finishReason
        self._finished = False
        self._calls = False

    def encode(self, frames: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        tally = self.tally
        for data in frames:
            if not data.strip():
                continue
            try:
                chunk = _view(data)
            except msgspec.ValidationError:
                chunk = _ChunkView()  # valid JSON of another shape: forward, learn nothing
            except msgspec.DecodeError:
                tally.error = MALFORMED
                out.append(error_frame(MALFORMED))
                self.ended = True
                break
            for candidate in chunk.candidates or ():
                content = candidate.content
                for part in (content.parts or ()) if content is not None else ():
                    if part.text:
                        tally.output_chars += len(part.text)
                    if part.functionCall is not None:
                        self._calls = True
                        tally.output_chars += len(_json_encode(part.functionCall.get("args")))
                if candidate.finishReason:
                    self._open.discard(candidate.index)
                    mapped = FINISH_FROM_WIRE.get(candidate.finishReason, "error")
                    if candidate.index == 0:
                        tally.finish_reason = (
                            "tool_calls" if mapped == "stop" and self._calls else mapped
                        )
                    self._finished = not self._open
                else:
                    self._open.add(candidate.index)
            if chunk.usageMetadata is not None:
                usage = usage_from_wire(chunk.usageMetadata)
                usage.partial = not self._finished
                tally.usage = usage
            out.append(sse_encode(_MODEL.sub(lambda m: m.group(1) + self._model, data, count=1)))
            if chunk.error is not None:  # forwarded as written; it ends the stream
                message, code, _ = error_from_wire(chunk.error)
                tally.error = Error("upstream", message or "the upstream failed", code or 502)
                self.ended = True
                break
        if out:
            tally.started = True
        return out

    def close(self, cancelled: bool = False) -> list[bytes]:
        """Nothing after the finishing chunk; an error chunk if the upstream stopped
        short; a stop by the user ends with a ``STOP`` chunk."""
        if self.ended:
            return []
        self.ended = True
        if (self._finished and not self._open) or self.tally.error:
            return []
        if not cancelled:
            self.tally.error = TRUNCATED
            return [error_frame(TRUNCATED)]
        self.tally.finish_reason = self.tally.finish_reason or "stop"
        body = {
            "candidates": [{"content": {"parts": [], "role": "model"}, "finishReason": "STOP"}],
            "usageMetadata": usage_to_wire(charged_usage(self.tally)),
        }
        return [sse_encode(_json_encode(body))]


# --- the non-streaming body, the model list --------------------------------------------


def encode_response(fold: Fold, model: str) -> dict[str, Any]:
    """The ``GenerateContentResponse`` of ``generateContent``: the fold of the stream."""
    candidates: list[dict[str, Any]] = []
    for choice in fold.ordered_choices():
        parts: list[dict[str, Any]] = []
        signature = choice.reasoning_signature
        if choice.reasoning:
            parts.append({"text": choice.reasoning, "thought": True})
        if choice.text:
            part: dict[str, Any] = {"text": choice.text}
            if signature:
                part["thoughtSignature"] = signature
                signature = None
            parts.append(part)
        if signature:  # no answer text to carry it: on the thought part (or one of its own)
            if parts:
                parts[0]["thoughtSignature"] = signature
            else:
                parts.append({"text": "", "thought": True, "thoughtSignature": signature})
        parts += [_call_part(c.name, c.arguments, c.signature) for c in choice.ordered_tool_calls()]
        candidates.append(
            {
                "content": {"parts": parts, "role": "model"},
                "finishReason": FINISH_TO_WIRE.get(choice.finish_reason or "stop", "OTHER"),
                "index": choice.index,
            }
        )
    return {
        "candidates": candidates,
        "usageMetadata": usage_to_wire(fold.usage_or_estimate()),
        "modelVersion": model,
        "responseId": fold.id or "gemini-response",
    }


METHODS = ["generateContent", "streamGenerateContent", "countTokens"]


def model_info(model: str, owner: str) -> dict[str, Any]:
    """One ``Model`` resource (``GET /v1beta/models/{model}``)."""
    return {
        "name": f"models/{model}",
        "baseModelId": model,
        "version": "001",
        "displayName": model,
        "description": f"{model}, served by {owner} through tokenrelay",
        "supportedGenerationMethods": METHODS,
    }


def model_list(models: list[tuple[str, str]]) -> dict[str, Any]:
    """``GET /v1beta/models``: ``{"models": [Model, ...]}`` (one page, no token)."""
    return {"models": [model_info(m, owner) for m, owner in models]}
