"""``tokenrelay chat`` and ``tokenrelay models``: a terminal client of the gateway.

``chat "prompt"`` streams one reply, flushed per delta; ``chat`` without a prompt is a
session: one message per line read from stdin (with a ``> `` prompt and line editing
on a terminal), the conversation kept as history, each reply streamed and followed by
a dim line with its time to first token, tokens per second and usage. Ctrl-C during a
reply stops it (the gateway cancels the stream) and the session goes on; Ctrl-D or
``/exit`` ends it. ``--json`` prints each event as one JSON object per line.

Built on ``tokenrelay.client`` (the sync ``Client``), so retries, resume and cancel are
the SDK's.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

import httpx
import msgspec

from .client import APIError, ChatResult, Client, Event, ReasoningDelta, TextDelta, ToolCallDelta
from .client.wire import bearer_headers

DIM, RESET = "\x1b[2m", "\x1b[0m"
EXIT_COMMANDS = ("/exit", "/quit")

_encode = msgspec.json.Encoder().encode


class Reply:
    """Writes one reply as it streams, and times it."""

    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out = out
        self.tty = out.isatty()
        self.as_json = as_json
        self.started = time.perf_counter()
        self.first: float | None = None
        self.reasoning = False
        self.text: list[str] = []

    def event(self, event: Event) -> None:
        out = self.out
        if self.first is None and isinstance(event, TextDelta | ReasoningDelta | ToolCallDelta):
            self.first = time.perf_counter()
        if self.as_json:
            out.write(_encode(event).decode() + "\n")
        elif isinstance(event, ReasoningDelta) and event.text:
            if self.tty and not self.reasoning:
                out.write(DIM)
            self.reasoning = True
            out.write(event.text)
        elif isinstance(event, TextDelta) and not event.choice:
            self._end_reasoning("\n\n")
            self.text.append(event.text)
            out.write(event.text)
        out.flush()

    def _end_reasoning(self, separator: str) -> None:
        if self.reasoning:
            self.out.write((RESET if self.tty else "") + separator)
            self.reasoning = False

    def end(self, result: ChatResult | None) -> None:
        """Close the reply: tool calls (complete only now), a newline."""
        if self.as_json:
            return
        self._end_reasoning("")
        for call in result.tool_calls if result is not None else ():
            self.out.write(f"\n[tool call {call.id}] {call.name}({call.arguments})")
        self.out.write("\n")
        self.out.flush()

    def stats(self, result: ChatResult) -> str:
        """``ttft 0.21s · 38.2 tok/s · 12 in / 40 out tokens``."""
        end = time.perf_counter()
        parts = []
        if self.first is not None:
            parts.append(f"ttft {self.first - self.started:.2f}s")
        usage = result.usage
        if usage is not None:
            approx = "~" if usage.estimated else ""
            if self.first is not None and end > self.first and usage.output:
                parts.append(f"{usage.output / (end - self.first):.1f} tok/s")
            parts.append(f"{approx}{usage.input} in / {approx}{usage.output} out tokens")
        return " · ".join(parts)


def _dim(line: str, stream: TextIO) -> str:
    return f"{DIM}{line}{RESET}" if stream.isatty() else line


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.max_tokens is not None:
        params["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        params["temperature"] = args.temperature
    return params


def ask(
    client: Client,
    args: argparse.Namespace,
    messages: list[dict[str, Any]],
    out: TextIO,
    err: TextIO,
    session: bool,
) -> str | None:
    """One reply, written to ``out``; its text (None if stopped before any). An
    ``APIError`` propagates. In a session Ctrl-C stops the reply (the gateway cancels
    it) and its partial text is kept; otherwise the interrupt propagates."""
    reply = Reply(out, args.json)
    try:
        result = _answer(client, args, messages, reply)
    except APIError:
        if reply.first is not None:
            reply.end(None)  # finish the line the partial reply is on
        raise
    except KeyboardInterrupt:
        reply.end(None)
        if not session:
            raise
        out.write(_dim("[stopped]", out) + "\n")
        out.flush()
        return "".join(reply.text) or None
    reply.end(result)
    if not args.no_stream:
        line = reply.stats(result)
        if session and not args.json:
            out.write(_dim(line, out) + "\n")
        elif not session and err.isatty():
            err.write(_dim(line, err) + "\n")
    out.flush()
    return result.text


def _answer(
    client: Client, args: argparse.Namespace, messages: list[dict[str, Any]], reply: Reply
) -> ChatResult:
    """The reply: streamed through ``reply`` (or written whole with ``--no-stream``)."""
    if args.no_stream:
        result = client.chat.create(model=args.model, messages=messages, **_params(args))
        reply.out.write(_encode(result).decode() + "\n" if args.json else result.text)
        return result
    with client.chat.stream(model=args.model, messages=messages, **_params(args)) as stream:
        for event in stream:
            reply.event(event)
        return stream.final()


def _read_line(interactive: bool) -> str | None:
    """The next line, or None at the end of input (Ctrl-D)."""
    if interactive:
        try:
            return input("> ")
        except EOFError:
            sys.stdout.write("\n")
            return None
    line = sys.stdin.readline()
    return line if line else None


def _session(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401 - line editing and history for input()
    history = _system(args)
    while True:
        try:
            line = _read_line(interactive)
        except KeyboardInterrupt:  # at the prompt: a fresh line, like a shell
            out.write("\n")
            continue
        if line is None:
            return 0
        line = line.strip()
        if not line:
            continue
        if line in EXIT_COMMANDS:
            return 0
        history.append({"role": "user", "content": line})
        try:
            answer = ask(client, args, history, out, err, session=True)
        except APIError as exc:
            err.write(f"error: {exc}\n")
            answer = None
        if answer is None:
            history.pop()
        else:
            history.append({"role": "assistant", "content": answer})


def _system(args: argparse.Namespace) -> list[dict[str, Any]]:
    return [{"role": "system", "content": args.system}] if args.system else []


def run_chat(args: argparse.Namespace) -> int:
    out, err = sys.stdout, sys.stderr
    with Client(args.base_url, args.api_key, protocol=args.protocol) as client:
        if args.prompt is None:
            return _session(client, args, out, err)
        prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
        messages = [*_system(args), {"role": "user", "content": prompt}]
        try:
            ask(client, args, messages, out, err, session=False)
        except APIError as exc:
            err.write(f"error: {exc}\n")
            return 1
    return 0


# --- models ---------------------------------------------------------------------------


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json().get("error") or {}
        return f"{response.status_code}: {error.get('message') or response.text}"
    except ValueError:
        return f"{response.status_code}: {response.text[:500]}"


def run_models(args: argparse.Namespace) -> int:
    url = args.base_url.rstrip("/") + "/models"
    try:
        response = httpx.get(url, headers=bearer_headers(args.api_key), timeout=10.0)
    except httpx.HTTPError as exc:
        sys.stderr.write(f"error: cannot reach {url}: {exc}\n")
        return 1
    if response.status_code != 200:
        sys.stderr.write(f"error {_error_text(response)}\n")
        return 1
    for model in msgspec.json.decode(response.content)["data"]:
        print(model["id"])
    return 0
