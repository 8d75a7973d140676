"""A provider reached over HTTP: any upstream protocol codec + base URL + key, over one
pooled aiohttp session per provider (keep-alive connections reused across requests).

The upstream key is sent in headers only; every message that leaves this module has it
redacted, whatever the upstream echoed back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from ..events import ChatRequest, Event, GatewayError
from ..protocols.base import UpstreamProtocol
from ..sse import ServerSentEvent, SSEDecoder

_json_encode = msgspec.json.Encoder().encode
_ERROR_BODY_LIMIT = 64 * 1024


@dataclass(slots=True)
class Endpoint:
    base_url: str
    api_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    connect_timeout: float | None = 10.0  # the other timeouts are the relay's (router.Timeouts)


def _salvage(content: aiohttp.StreamReader) -> bytes:
    """What the connection delivered before it failed. aiohttp raises the failure before
    handing over bytes it had already buffered; they are whole frames the client must
    still get. (Reads aiohttp's private buffer: checked by the drop-after-k tests.)"""
    buffer = getattr(content, "_buffer", None)
    if not buffer:
        return b""
    data = b"".join(bytes(piece) for piece in buffer)
    buffer.clear()
    return data


class HTTPUpstream:
    def __init__(
        self, provider: HTTPProvider, response: aiohttp.ClientResponse, codec: UpstreamProtocol
    ) -> None:
        self.protocol: str | None = codec.name
        self._provider = provider
        self._response = response
        self._codec = codec
        self._finished = False

    async def frames(self) -> AsyncIterator[list[ServerSentEvent]]:
        decoder = SSEDecoder()
        content = self._response.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    break
                frames = decoder.feed(chunk)
                if frames:
                    yield frames
        except (TimeoutError, aiohttp.ClientError) as exc:
            frames = decoder.feed(_salvage(content))
            if frames:
                yield frames
            raise self._provider.failure(exc, "while streaming") from None
        self._finished = True

    async def events(self) -> AsyncIterator[list[Event]]:
        decoder = self._codec.stream_decoder()
        async for frames in self.frames():
            events: list[Event] = []
            for frame in frames:
                events.extend(decoder.feed(frame))
            if events:
                yield events
        tail = decoder.close()
        if tail:
            yield tail

    async def aclose(self) -> None:
        if self._finished:
            self._response.release()  # read to the end: the connection goes back to the pool
        else:
            self._response.close()  # mid-stream: drop the connection, the upstream sees it


class HTTPProvider:
    """An upstream reached over HTTP with one of the protocol codecs."""

    def __init__(
        self, name: str, codec: UpstreamProtocol, endpoint: Endpoint, models: list[str]
    ) -> None:
        self.name = name
        self.codec = codec
        self.endpoint = endpoint
        self._models = models
        self._session: aiohttp.ClientSession | None = None

    def models(self) -> list[str]:
        return self._models

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0, keepalive_timeout=60, enable_cleanup_closed=True
                ),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.endpoint.connect_timeout
                ),
                auto_decompress=True,
                raise_for_status=False,
            )
        return self._session

    def redact(self, text: str) -> str:
        key = self.endpoint.api_key
        return text.replace(key, "[redacted]") if key and len(key) >= 4 else text

    def failure(self, exc: BaseException, when: str) -> GatewayError:
        if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
            return GatewayError(
                "timeout", f"upstream {self.name} timed out {when}", code="upstream_timeout"
            )
        detail = self.redact(str(exc) or type(exc).__name__)
        return GatewayError(
            "upstream", f"upstream {self.name} failed {when}: {detail}", code="upstream_error"
        )

    async def open(self, request: ChatRequest, model: str) -> HTTPUpstream:
        codec = self.codec
        body = _json_encode(codec.encode_request(request, model))
        headers: dict[str, Any] = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            **self.endpoint.headers,
            **codec.headers(self.endpoint.api_key),
        }
        url = codec.url(self.endpoint.base_url, model, True)
        try:
            response = await self._get_session().post(url, data=body, headers=headers)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self.failure(exc, "before responding") from None
        if response.status != 200:
            try:
                raw = await response.content.read(_ERROR_BODY_LIMIT)
            except (TimeoutError, aiohttp.ClientError):
                raw = b""
            finally:
                response.close()
            error = codec.decode_error(response.status, raw)
            error.message = self.redact(error.message)
            retry_after = response.headers.get("Retry-After")
            if retry_after:
                error.headers["Retry-After"] = retry_after
            raise error
        return HTTPUpstream(self, response, codec)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
