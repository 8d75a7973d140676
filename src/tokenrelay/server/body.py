"""Reading a request body, bounded, and the numbers a client writes in requests.

A body is read only after the request's key was checked from its headers (the caller's
job): a request without a valid key is answered before a byte of its body is read,
and the connection discards the rest (``connections.py`` bounds how long).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive

from ..events import GatewayError
from ..numbers import decimal


def too_large(limit: int) -> GatewayError:
    return GatewayError(
        "request_too_large",
        f"The request body is larger than the limit of {limit} bytes.",
        code="request_too_large",
    )


async def read_body(receive: Receive, headers: Headers, limit: int) -> bytes:
    """The request body, or a 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = headers.get("content-length")
    if declared is not None and (length := decimal(declared)) is not None and length > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    """``receive``, with ``body`` as the request's whole body first: for a route that
    builds the body itself (``GET /v1/chat/stream`` from its query or its token) and
    hands it to the one chat path, which reads the body from ``receive``."""
    sent = False

    async def wrapped() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return wrapped
