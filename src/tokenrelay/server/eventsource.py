"""``/v1/chat/stream``: a chat a browser's bare ``EventSource`` can start, as the
tutorials show (``new EventSource('/v1/chat/stream?...')``), without an API key in the
URL (``EventSource`` sends no headers, and URLs end up in logs).

- ``POST /v1/chat/stream`` (authenticated like any request): a single-stream token
  (``store/stream_tokens.py``), bound to the key and, when a Chat Completions body comes
  with it, to that prepared request (checked now: a bad body or a model the key may not
  use is the POST's 400 or 404, not a broken ``EventSource``). Answers ``{"token",
  "url", "expires_in"}``.
- ``GET /v1/chat/stream?token=...`` starts the token's stream: the prepared request, or
  one made of the query (``model``, ``prompt``, optional ``system``, ``max_tokens``,
  ``temperature``). Frames are the OpenAI wire's ``data: {chunk}``, each with its
  ``id:``, then ``data: [DONE]``: ``onmessage`` parses ``event.data`` and renders
  ``choices[0].delta.content``, and closes the source on ``[DONE]`` (else the browser
  reconnects). A reconnect (``Last-Event-ID``) with the same token re-attaches to that
  stream: no second generation. A token starts one stream, once, within its ``ttl``.
- In open mode (no master key) the GET needs no token: the tutorial's URL works as is.

Tokens live in this process's memory, or in Redis with ``redis_url`` (any worker or
replica then takes a token another minted). Whoever uses one is resolved again from
the token's owner (``Authenticator.principal_of``): a key revoked since starts nothing.

An API key in the query (``key``, ``api_key``) is refused, never used.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..events import GatewayError
from ..protocols.openai import codec as openai
from ..store.stream_tokens import StreamTokens, TokenStore, prefix
from ..streams.hub import parse_event_id
from .api import read_body
from .body import replaying
from .relay import Gateway
from .streaming import RESUME_HEADER

access = logging.getLogger("tokenrelay.access")
_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode
PATH = "/v1/chat/stream"


def _error(error: GatewayError) -> Response:
    return JSONResponse(openai.error_body(error), error.status, error.headers or None)


def _from_query(query: Any) -> dict[str, Any]:
    """A Chat Completions body from the GET's query parameters."""
    model, prompt = query.get("model"), query.get("prompt")
    if not model or prompt is None:
        raise GatewayError(
            "invalid_request",
            f"GET {PATH} needs a token for a prepared request, or ?model=...&prompt=...",
            param="model" if not model else "prompt",
        )
    messages = [{"role": "system", "content": query["system"]}] if query.get("system") else []
    messages.append({"role": "user", "content": prompt})
    body: dict[str, Any] = {"model": model, "messages": messages}
    for name, kind in (("max_tokens", int), ("temperature", float)):
        if query.get(name):
            try:
                body[name] = kind(query[name])
            except ValueError:
                raise GatewayError(
                    "invalid_request", f"'{name}' must be a number", param=name
                ) from None
    return body


class ChatStreams:
    def __init__(self, gateway: Gateway, tokens: TokenStore | None = None) -> None:
        self.gateway = gateway
        config = gateway.config
        self.tokens = tokens or create_stream_tokens(
            config.redis_url, config.streams.token_ttl, config.streams.retention
        )

    async def aclose(self) -> None:
        await self.tokens.aclose()

    async def mint(self, request: Request) -> Response:
        gateway = self.gateway
        try:
            principal = await gateway.accounts.principal(request.headers)
            raw = await read_body(request.receive, request.headers, gateway.config.max_body_bytes)
            body: bytes | None = None
            if raw.strip():
                try:
                    data = _decode(raw)
                except msgspec.DecodeError as exc:
                    raise GatewayError(
                        "invalid_request", f"The request body is not valid JSON: {exc}"
                    ) from None
                if not (isinstance(data, dict) and data == {}):
                    if isinstance(data, dict):
                        data = {**data, "stream": True}
                    principal.check_model(openai.decode_request(data).model)
                    body = _encode(data)
            token = await self.tokens.mint(principal.owner, body)
        except GatewayError as error:
            return _error(error)
        access.info("stream token %s minted prepared=%s", prefix(token), body is not None)
        return JSONResponse(
            {
                "object": "stream_token",
                "token": token,
                "url": f"{PATH}?token={token}",
                "expires_in": int(self.tokens.ttl),
            },
            headers={"cache-control": "no-store"},
        )

    async def start(self, request: Request) -> ASGIApp:
        gateway, query = self.gateway, request.query_params
        headers = request.headers
        try:
            if "key" in query or "api_key" in query:
                raise GatewayError(
                    "invalid_request",
                    "An API key never goes in a URL: POST /v1/chat/stream for a stream token.",
                    param="key",
                )
            token = query.get("token")
            if token is None:
                if gateway.config.master_key:
                    raise GatewayError(
                        "authentication",
                        f"GET {PATH} needs ?token=: POST {PATH} (with your API key) for one.",
                        code="stream_token_required",
                    )
                body = _encode({**_from_query(query), "stream": True})
                return await gateway.chat(  # open mode
                    openai, replaying(body, request.receive), _resumer(dict(headers))
                )
            resume = parse_event_id(headers.get("last-event-id"))
            ticket = await self.tokens.resumable(token) if resume is not None else None
            if ticket is not None and resume is not None and resume[0] == ticket.stream_id:
                await gateway.accounts.auth.principal_of(ticket.owner)  # still allowed?
                stream = await gateway.hub.find(resume[0], ticket.owner)
                access.info("stream token %s resume %s", prefix(token), resume[0])
                return gateway.attach(stream, resume[1], retry=True)
            ticket = await self.tokens.claim(token)
            if ticket is None:
                raise GatewayError(
                    "authentication",
                    "The stream token is unknown, expired or used already.",
                    code="invalid_stream_token",
                )
            principal = await gateway.accounts.auth.principal_of(ticket.owner)
            body = ticket.body or _encode({**_from_query(query), "stream": True})
        except GatewayError as error:
            access.info("stream token GET status=%d %s", error.status, error.code)
            return _error(error)
        plain = {k: v for k, v in headers.items() if k != "last-event-id"}
        receive = replaying(body, request.receive)
        response = await gateway.chat(openai, receive, _resumer(plain), principal=principal)

        async def started(stream_id: str) -> None:
            try:
                await self.tokens.started(ticket, stream_id)
            except GatewayError:  # the stream goes on; only a reconnect by token fails
                access.warning("stream token %s started %s, not kept", prefix(token), stream_id)
                return
            access.info("stream token %s started %s", prefix(token), stream_id)

        return _seeing_stream_id(response, started)


def _seeing_stream_id(app: ASGIApp, found: Callable[[str], Awaitable[None]]) -> ASGIApp:
    """``app``, telling ``found`` the stream id its response starts with: a streaming
    answer is begun inside the response (``opening.py``), so the id is known only then.
    Awaited before the response starts, once per stream: a reconnect (which needs the
    id kept) can only follow."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def watching(message: Message) -> None:
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", ()):
                    if name == b"x-stream-id":
                        await found(value.decode())
            await send(message)

        await app(scope, receive, watching)

    return wrapped


def _resumer(headers: dict[str, str]) -> Headers:
    """The request's headers, declaring that its client resumes: an ``EventSource``
    reconnects by itself with ``Last-Event-ID``, so its frames carry ids and its stream
    gets the grace (README, "Resume")."""
    return Headers(headers={**headers, RESUME_HEADER: "1"})


def create_stream_tokens(redis_url: str | None, ttl: float, resume_for: float) -> TokenStore:
    """The store for this gateway: Redis's when it has one, else this process's memory."""
    if redis_url:
        from ..store.stream_tokens_redis import RedisStreamTokens

        return RedisStreamTokens(redis_url, ttl, resume_for)
    return StreamTokens(ttl, resume_for)


def chat_stream_routes(streams: ChatStreams) -> list[BaseRoute]:
    return [
        Route(PATH, streams.mint, methods=["POST"]),
        Route(PATH, streams.start, methods=["GET"]),
    ]
