"""The transport of one client: requests with retries before the first byte, and the
gateway's stream routes (re-attach, cancel)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx

from .errors import APIConnectionError, APIError, APITimeoutError, response_error
from .options import RETRYABLE_STATUS, Clock, Retry, Timeouts, backoff, retry_after

__all__ = ["Session"]

CANCEL_TIMEOUT = 5.0  # seconds the stop request may take; it is best effort


class Session:
    """An ``httpx.AsyncClient`` and where it points. Owns the client unless one was
    given."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeouts: Timeouts,
        http: httpx.AsyncClient | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.headers = dict(headers or {})
        self._owned = http is None
        self.http = http or httpx.AsyncClient(timeout=timeouts.httpx())

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        timeouts: Timeouts,
        json: Any = None,
    ) -> httpx.Request:
        """A request to ``base_url + path`` with the client's and the call's headers."""
        return self.http.build_request(
            method,
            self.base_url + path,
            json=json,
            headers={**self.headers, **headers},
            timeout=timeouts.httpx(),
        )

    async def attempt(self, request: httpx.Request, clock: Clock) -> httpx.Response | APIError:
        """One send, the body not read yet: a 2xx response, or the error when it is
        worth retrying (connection errors, 408, 429, 5xx). Other errors are raised."""
        try:
            response = await clock.run(self.http.send(request, stream=True))
        except httpx.TimeoutException as exc:
            return APITimeoutError(f"cannot reach {request.url}: {exc!r}", code="connect_timeout")
        except httpx.TransportError as exc:
            return APIConnectionError(f"cannot reach {request.url}: {exc!r}")
        if response.is_success:
            return response
        try:
            content = await clock.run(response.aread())
        except httpx.TransportError as exc:
            content = f"(the error body was cut: {exc!r})".encode()
        finally:
            await response.aclose()
        error = response_error(
            response.status_code,
            content,
            response.headers.get("x-request-id"),
            retry_after(response.headers),
        )
        if response.status_code in RETRYABLE_STATUS:
            return error
        raise error

    async def send(self, request: httpx.Request, clock: Clock, retry: Retry) -> httpx.Response:
        """``request`` with retries before the first byte: full-jitter backoff, or the
        server's ``Retry-After``; at most ``retry.max_attempts`` sends."""
        attempt = 0
        while True:
            clock.sent()
            result = await self.attempt(request, clock)
            if isinstance(result, httpx.Response):
                return result
            attempt += 1
            await pause(result, attempt, retry, clock, retry.max_attempts)

    async def cancel(self, stream_id: str, headers: Mapping[str, str]) -> None:
        """Stop a stream on the gateway (best effort: a failure is not the caller's)."""
        url = f"{self.base_url}/streams/{stream_id}/cancel"
        try:
            response = await self.http.post(
                url, headers={**self.headers, **headers}, timeout=CANCEL_TIMEOUT
            )
            await response.aclose()
        except httpx.HTTPError:
            pass

    async def aclose(self) -> None:
        if self._owned:
            await self.http.aclose()


async def pause(error: APIError, attempt: int, retry: Retry, clock: Clock, limit: int) -> None:
    """Sleep before try number ``attempt + 1`` of ``limit``, or raise ``error`` when the
    tries are used up or the server asks for a longer wait than ``retry_after_max``."""
    hint = error.retry_after
    if attempt >= limit or (hint is not None and hint > retry.retry_after_max):
        raise error
    delay = hint if hint is not None else backoff(retry, attempt - 1)
    await clock.run(asyncio.sleep(delay))
