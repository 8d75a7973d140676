"""``AsyncClient``: the SDK itself. ``Client`` (``sync.py``) runs this same code."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import httpx
import msgspec

from ..fold import Fold
from .errors import APIConnectionError
from .options import Clock, Retry, Timeouts
from .result import ChatResult
from .session import Session
from .stream import AsyncChatStream
from .wire import ProtocolName, Wire, wire_for

__all__ = ["DEFAULT_BASE_URL", "AsyncChat", "AsyncClient"]

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"

Messages = list[dict[str, Any]]


class AsyncChat:
    """``client.chat``: streaming and non-streaming chat in the client's protocol.

    ``messages`` and ``**params`` are the chosen wire's own fields (OpenAI Chat
    Completions or Anthropic Messages), sent as given, except that on the Anthropic
    wire ``system`` messages become the ``system`` field and ``max_tokens`` has a
    default. ``protocol``, ``timeout``, ``retry`` and ``extra_headers`` override the
    client's settings for one call.
    """

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    def _prepare(
        self,
        model: str,
        messages: Messages,
        params: dict[str, Any],
        stream: bool,
        protocol: ProtocolName | None,
        extra_headers: Mapping[str, str] | None,
    ) -> tuple[Wire, dict[str, Any], dict[str, str]]:
        client = self._client
        wire = wire_for(protocol or client.protocol)
        headers = {**wire.headers(client.api_key), **(extra_headers or {})}
        if stream:  # this SDK resumes a dropped stream: ids on its frames, and the grace
            headers.setdefault("X-Tokenrelay-Resume", "1")
        return wire, wire.body(model, messages, params, stream), headers

    def stream(
        self,
        *,
        model: str,
        messages: Messages,
        protocol: ProtocolName | None = None,
        timeout: Timeouts | None = None,
        retry: Retry | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> AsyncChatStream:
        """A streaming answer (sent when the stream is entered or first iterated)."""
        wire, body, headers = self._prepare(model, messages, params, True, protocol, extra_headers)
        client = self._client
        return AsyncChatStream(
            client.session,
            wire,
            body,
            headers,
            timeout or client.timeouts,
            retry or client.retry,
        )

    async def create(
        self,
        *,
        model: str,
        messages: Messages,
        protocol: ProtocolName | None = None,
        timeout: Timeouts | None = None,
        retry: Retry | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> ChatResult:
        """One non-streaming answer, assembled like a stream's ``final()``. Only the
        ``connect`` and ``total`` timeouts apply."""
        wire, body, headers = self._prepare(model, messages, params, False, protocol, extra_headers)
        client = self._client
        timeouts = timeout or client.timeouts
        clock = Clock(timeouts, streaming=False)
        request = client.session.request("POST", wire.path, headers, timeouts, body)
        response = await client.session.send(request, clock, retry or client.retry)
        try:
            content = await clock.run(response.aread())
        except httpx.TransportError as exc:
            raise APIConnectionError(f"the answer was cut: {exc!r}") from None
        finally:
            await response.aclose()
        request_id = response.headers.get("x-request-id")
        try:
            answer = msgspec.json.decode(content)
        except msgspec.DecodeError:
            raise APIConnectionError(
                "the server sent a body that is not JSON", request_id=request_id
            ) from None
        return ChatResult.from_fold(Fold().extend(wire.events(answer)), request_id)


class AsyncClient:
    """A client of the gateway (or of any OpenAI- or Anthropic-compatible server).

    ``base_url`` ends at the API version (``http://127.0.0.1:8000/v1``); it defaults to
    ``$TOKENRELAY_BASE_URL``, ``api_key`` to ``$TOKENRELAY_API_KEY``. ``protocol``
    picks the wire (``openai`` or ``anthropic``). ``timeouts`` and ``retry`` are the
    defaults of every call. ``http_client`` replaces the ``httpx.AsyncClient`` (for
    proxies, custom transports in tests); the caller then closes it.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        protocol: ProtocolName = "openai",
        timeouts: Timeouts | None = None,
        retry: Retry | None = None,
        headers: Mapping[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        wire_for(protocol)  # reject an unknown name now
        self.base_url = base_url or os.environ.get("TOKENRELAY_BASE_URL") or DEFAULT_BASE_URL
        self.api_key = api_key if api_key is not None else os.environ.get("TOKENRELAY_API_KEY")
        self.protocol: ProtocolName = protocol
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or Retry()
        self.session = Session(self.base_url, self.api_key, self.timeouts, http_client, headers)
        self.chat = AsyncChat(self)

    async def aclose(self) -> None:
        """Close the connections (of an ``httpx`` client this client created)."""
        await self.session.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
