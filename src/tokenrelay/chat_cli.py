"""``tokenrelay chat`` and ``tokenrelay models``: a terminal client of the gateway.

The reply is printed as it streams, flushed per delta; reasoning is shown dimmed on a
terminal; tool calls are printed when complete. Uses the same SSE decoder, OpenAI codec
and fold as the server.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import httpx
import msgspec

from .events import Error, Event, ReasoningDelta, TextDelta
from .fold import Fold
from .protocols.openai_stream import OpenAIStreamDecoder
from .sse import SSEDecoder

DIM, RESET = "\x1b[2m", "\x1b[0m"


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json().get("error") or {}
        return f"{response.status_code}: {error.get('message') or response.text}"
    except ValueError:
        return f"{response.status_code}: {response.text[:500]}"


def _print_tool_calls(fold: Fold, out: TextIO) -> None:
    for choice in fold.ordered_choices():
        for call in choice.ordered_tool_calls():
            out.write(f"\n[tool call {call.id}] {call.name}({call.arguments})")


def run_chat(args: argparse.Namespace) -> int:
    prompt = args.prompt
    if prompt is None or prompt == "-":
        prompt = sys.stdin.read()
    messages: list[dict[str, Any]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    messages.append({"role": "user", "content": prompt})
    body: dict[str, Any] = {"model": args.model, "messages": messages, "stream": not args.no_stream}
    if args.max_tokens is not None:
        body["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        body["temperature"] = args.temperature
    url = args.base_url.rstrip("/") + "/chat/completions"
    out, err = sys.stdout, sys.stderr
    tty = out.isatty()
    timeout = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=10.0)
    try:
        with httpx.Client(timeout=timeout) as client:
            if args.no_stream:
                response = client.post(url, json=body, headers=_headers(args.api_key))
                if response.status_code != 200:
                    err.write(f"error {_error_text(response)}\n")
                    return 1
                message = response.json()["choices"][0]["message"]
                out.write((message.get("content") or "") + "\n")
                for call in message.get("tool_calls") or ():
                    fn = call["function"]
                    out.write(f"[tool call {call['id']}] {fn['name']}({fn['arguments']})\n")
                return 0
            with client.stream("POST", url, json=body, headers=_headers(args.api_key)) as response:
                if response.status_code != 200:
                    response.read()
                    err.write(f"error {_error_text(response)}\n")
                    return 1
                return _print_stream(response, out, err, tty)
    except httpx.HTTPError as exc:
        err.write(f"error: cannot reach {url}: {exc}\n")
        return 1


def _print_stream(response: httpx.Response, out: TextIO, err: TextIO, tty: bool) -> int:
    sse, decoder, fold = SSEDecoder(), OpenAIStreamDecoder(), Fold()
    reasoning = False
    failure: Error | None = None
    for chunk in response.iter_bytes():
        for frame in sse.feed(chunk):
            events: list[Event] = decoder.feed(frame)
            for event in events:
                fold.add(event)
                if isinstance(event, ReasoningDelta) and event.text:
                    if tty and not reasoning:
                        out.write(DIM)
                    reasoning = True
                    out.write(event.text)
                elif isinstance(event, TextDelta):
                    if reasoning:
                        out.write(RESET + "\n\n" if tty else "\n\n")
                        reasoning = False
                    out.write(event.text)
                elif isinstance(event, Error):
                    failure = event
            out.flush()
    if reasoning and tty:
        out.write(RESET)
    _print_tool_calls(fold, out)
    out.write("\n")
    out.flush()
    if failure is not None:
        err.write(f"error: {failure.message}\n")
        return 1
    return 0


def run_models(args: argparse.Namespace) -> int:
    url = args.base_url.rstrip("/") + "/models"
    try:
        response = httpx.get(url, headers=_headers(args.api_key), timeout=10.0)
    except httpx.HTTPError as exc:
        sys.stderr.write(f"error: cannot reach {url}: {exc}\n")
        return 1
    if response.status_code != 200:
        sys.stderr.write(f"error {_error_text(response)}\n")
        return 1
    for model in msgspec.json.decode(response.content)["data"]:
        print(model["id"])
    return 0
