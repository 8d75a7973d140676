"""A minimal ASGI app for choices.py: every POST is answered with small OpenAI-style SSE
chunks and ``data: [DONE]``, so the figure measured is the ASGI server's own cost per
streamed chunk. By default 200 chunks back to back; the query string ``?n=100&gap=0.01``
sends 100 chunks 10 ms apart (each one then leaves in its own write, as with a real
model). Serve with ``uvicorn asgi_stream:app`` or ``granian --interface asgi
asgi_stream:app`` from this directory."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CHUNKS = 200
_BODY = {
    "id": "chatcmpl-bench",
    "object": "chat.completion.chunk",
    "created": 1700000000,
    "model": "gen/200",
    "choices": [{"index": 0, "delta": {"content": "token "}, "finish_reason": None}],
}
FRAME = b"data: " + json.dumps(_BODY, separators=(",", ":")).encode() + b"\n\n"
DONE = b"data: [DONE]\n\n"
HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    while True:  # read the whole request body
        msg = await receive()
        if not msg.get("more_body"):
            break
    query = parse_qs(scope.get("query_string", b"").decode())
    n = int(query.get("n", [CHUNKS])[0])
    gap = float(query.get("gap", [0])[0])
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    for i in range(n):
        if gap and i:
            await asyncio.sleep(gap)
        await send({"type": "http.response.body", "body": FRAME, "more_body": True})
    await send({"type": "http.response.body", "body": DONE, "more_body": False})
