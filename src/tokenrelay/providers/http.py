"""A provider reached over HTTP: any upstream protocol codec + base URL + key, over one
keep-alive connection pool per provider (``transport.Pool``).

The upstream key is sent in headers only; every message that leaves this module has it
redacted, whatever the upstream echoed back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from ..affinity import Conversation
from ..embeddings import EmbeddingAnswer, EmbeddingRequest
from ..events import ChatRequest, Event, GatewayError, too_deep
from ..protocols.base import EmbeddingWire, UpstreamProtocol
from ..sse import ServerSentEvent, SSEDataDecoder, SSEDecoder, SSENamedDecoder
from .betas import BetaFilter
from .keys import KeyPool, UpstreamKey, key_id, parse_retry_after
from .transport import Pool, Response, TransportError

T = TypeVar("T")
_json_encode = msgspec.json.Encoder().encode
_ERROR_BODY_LIMIT = 64 * 1024


@dataclass(slots=True)
class Endpoint:
    base_url: str
    api_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    connect_timeout: float | None = 10.0  # the other timeouts are the relay's (router.Timeouts)
    anthropic_betas: list[str] | None = None  # the flags accepted (betas.py); None: by host
    api_keys: list[tuple[str, str]] = field(default_factory=list)  # (id, secret), more keys

    def secrets(self, provider: str) -> list[tuple[str, str]]:
        """Every key as (id, secret): ``api_key`` first, then ``api_keys``."""
        keys = [(key_id(provider, self.api_key), self.api_key)] if self.api_key else []
        return keys + [k for k in self.api_keys if k[1] != self.api_key]


class HTTPUpstream:
    def __init__(
        self,
        provider: HTTPProvider,
        response: Response,
        codec: UpstreamProtocol,
        key_id: str | None = None,
    ) -> None:
        self.protocol: str | None = codec.name
        self.key_id = key_id  # the upstream key that served it
        self._provider = provider
        self._response = response
        self._codec = codec

    def frames(self) -> AsyncIterator[list[ServerSentEvent]]:
        return self._decoded(SSEDecoder().feed)

    def payloads(self) -> AsyncIterator[list[bytes]]:
        return self._decoded(SSEDataDecoder().feed)

    def named(self) -> AsyncIterator[list[tuple[bytes | None, bytes]]]:
        return self._decoded(SSENamedDecoder().feed)

    async def _decoded(self, feed: Callable[[bytes], list[T]]) -> AsyncIterator[list[T]]:
        # The connection decodes each read as it arrives; what came before a failure is
        # delivered before the failure is raised.
        response = self._response
        response.decode_with(feed)
        take = response.next
        try:
            while (frames := await take()) is not None:
                yield frames
        except TransportError as exc:
            raise self._provider.failure(exc, "while streaming") from None

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
        # read to the end: the connection goes back to the pool; mid-stream: aborted
        self._response.close()


def with_client_headers(headers: dict[str, str], client: dict[str, str]) -> dict[str, str]:
    """``headers`` plus the client's forwarded ones; a name both have (any case) gets
    both values, the provider's configured ones first, comma-joined (``anthropic-beta``
    is such a list)."""
    out = dict(headers)
    lower = {k.lower(): k for k in out}
    for name, value in client.items():
        key = lower.get(name.lower())
        out[key or name] = f"{out[key]},{value}" if key else value
    return out


class HTTPProvider:
    """An upstream reached over HTTP with one of the protocol codecs."""

    def __init__(
        self,
        name: str,
        codec: UpstreamProtocol,
        endpoint: Endpoint,
        models: list[str],
        embeddings: EmbeddingWire | None = None,
        variants: dict[str, UpstreamProtocol | None] | None = None,
        keys: KeyPool | None = None,
    ) -> None:
        self.name = name
        self.codec = codec
        self.embeddings = embeddings  # None: this provider does not embed (``endpoints``)
        # client protocols served by an endpoint of their own (``/completions``): the
        # codec that speaks to it, or None where the provider does not list it
        self.variants = variants or {}
        self.endpoint = endpoint
        self._models = models
        self._pool = Pool(connect_timeout=endpoint.connect_timeout)
        self.betas = BetaFilter(endpoint.anthropic_betas, endpoint.base_url)
        base = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        base.update(endpoint.headers)
        if keys is None:
            keys = KeyPool([UpstreamKey(i, s) for i, s in endpoint.secrets(name)])
        for key in keys.keys:
            key.headers = {**base, **codec.headers(key.secret)}
        self.keys = keys
        self._headers = {**base, **codec.headers(None)}  # keyless

    def _headers_of(self, key: UpstreamKey | None) -> dict[str, str]:
        return key.headers if key is not None else self._headers

    def models(self) -> list[str]:
        return self._models

    def redact(self, text: str) -> str:
        return self.keys.redact(text)

    def failure(self, exc: BaseException, when: str) -> GatewayError:
        if isinstance(exc, TimeoutError):
            return GatewayError(
                "timeout", f"upstream {self.name} timed out {when}", code="upstream_timeout"
            )
        detail = self.redact(str(exc) or type(exc).__name__)
        return GatewayError(
            "upstream", f"upstream {self.name} failed {when}: {detail}", code="upstream_error"
        )

    async def open(
        self, request: ChatRequest, model: str, conversation: Conversation | None = None
    ) -> HTTPUpstream:
        codec = self.codec
        source = request.source
        if source is not None and source.protocol in self.variants:
            variant = self.variants[source.protocol]
            if variant is None:
                raise GatewayError(
                    "invalid_request",
                    f"The provider {self.name!r} does not serve this endpoint "
                    "(its `endpoints` do not list it).",
                    code="endpoint_not_supported",
                    param="model",
                )
            codec = variant
        if source is not None and source.protocol != codec.name:
            source.check_translatable()  # a body the canon could not read: no translation
        try:
            body = _json_encode(codec.encode_request(request, model))
        except RecursionError:  # tool arguments (JSON in the JSON) nested too deeply
            raise too_deep() from None
        url = codec.url(self.endpoint.base_url, model, True)
        forwarded = None
        if source is not None and source.headers and source.protocol == codec.name:
            forwarded = self.betas.headers(source.headers)
        tried: set[str] = set()
        while True:
            key = self.keys.pick(tried, conversation)
            headers = self._headers_of(key)
            if forwarded:
                headers = with_client_headers(headers, forwarded)
            try:
                response = await self._pool.request("POST", url, headers, body)
            except (TransportError, ValueError) as exc:
                raise self.failure(exc, "before responding") from None
            if key is not None:
                key.served += 1
            if response.status == 200:
                return HTTPUpstream(self, response, codec, key.id if key is not None else None)
            error = await self._refused(response)
            if key is None or not self._key_failed(key, response.status, error):
                raise error
            tried.add(key.id)
            if not self.keys.usable(tried):
                raise error  # no other key to try: the upstream's answer goes back

    def _key_failed(self, key: UpstreamKey, status: int, error: GatewayError) -> bool:
        """Whether ``status`` was the key's fault (429: it rests for the Retry-After;
        401/403: it is disabled), so another key may be tried at once."""
        if status == 429:
            self.keys.rest(key, parse_retry_after(error.headers.get("Retry-After")))
            return True
        if status in (401, 403):
            self.keys.disable(key, status)
            return True
        return False

    async def _refused(self, response: Response) -> GatewayError:
        try:
            raw = await response.read(_ERROR_BODY_LIMIT)
        except TransportError:
            raw = b""
        finally:
            response.close()
        return self._error(response, raw, self.codec.decode_error)

    def _error(
        self, response: Response, raw: bytes, decode: Callable[[int, bytes], GatewayError]
    ) -> GatewayError:
        """An upstream's refusal as ``decode`` reads it, redacted, its ``Retry-After``
        kept (the client gets it, and the attempts read it)."""
        error = decode(response.status, raw)
        error.message = self.redact(error.message)
        if self.keys.leaks(raw):
            error.upstream = None  # the verbatim body would leak the key
        retry_after = response.header("Retry-After")
        if retry_after:
            error.headers["Retry-After"] = retry_after
        return error

    async def post(
        self, url: str, body: bytes, client_headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """A plain (not streamed) JSON request on this provider's pool, with its key and
        headers (and the client's forwarded ones, betas filtered): (status, body), the
        body redacted. For side requests such as counting tokens."""
        headers = {**self._headers_of(self.keys.pick()), "Accept": "application/json"}
        if client_headers:
            headers = with_client_headers(headers, self.betas.headers(client_headers))
        try:
            response = await self._pool.request("POST", url, headers, body)
            try:
                raw = await response.read(_ERROR_BODY_LIMIT)
            finally:
                response.close()
        except (TransportError, ValueError) as exc:
            raise self.failure(exc, "before responding") from None
        if self.keys.leaks(raw):
            raw = self.redact(raw.decode("utf-8", "replace")).encode()
        return response.status, raw

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingAnswer:
        """One embeddings call (not streamed) on this provider's pool, with its keys as
        a chat's (a key that answers 429 rests, 401/403 disables it; the next is tried);
        an upstream error is raised as the ``GatewayError`` its wire describes (status,
        message, code, ``Retry-After``), retried by the caller's attempts like a chat's."""
        wire = self.embeddings
        if wire is None:
            raise GatewayError(
                "invalid_request",
                f"The provider {self.name!r} does not serve embeddings "
                "(its protocol has none, or its `endpoints` do not list them).",
                code="endpoint_not_supported",
                param="model",
            )
        url = wire.url(self.endpoint.base_url, model)
        body = wire.encode_request(request, model)
        tried: set[str] = set()
        while True:
            key = self.keys.pick(tried)
            headers = {**self._headers_of(key), "Accept": "application/json"}
            try:
                response = await self._pool.request("POST", url, headers, body)
                try:
                    raw = await response.read()  # vectors: far more than an error's limit
                finally:
                    response.close()
            except (TransportError, ValueError) as exc:
                raise self.failure(exc, "before responding") from None
            if key is not None:
                key.served += 1
            if response.status == 200:
                if self.keys.leaks(raw):
                    raw = self.redact(raw.decode("utf-8", "replace")).encode()
                return wire.decode_answer(raw, request)
            error = self._error(response, raw[:_ERROR_BODY_LIMIT], wire.decode_error)
            if key is None or not self._key_failed(key, response.status, error):
                raise error
            tried.add(key.id)
            if not self.keys.usable(tried):
                raise error

    async def aclose(self) -> None:
        await self._pool.aclose()
