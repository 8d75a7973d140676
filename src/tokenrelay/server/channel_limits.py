"""A channel's own limits (``limits:`` of a provider or a database channel: requests per
minute, requests in flight), checked per attempt with the limiter the keys' limits use
(``limits/``: in memory, or in Redis so that every replica counts the same), under the
key ``channel:<name>``.

A channel at its limit is not a failure of the channel (its health is not touched): the
attempt goes to the model's next deployment, at once and without counting as an
attempt; when none is left the client gets 429 with the ``Retry-After`` of the limit,
worded for the channel (``channel_rate_limited``). The concurrency slot is held for as
long as the attempt's upstream is in use and given back when it ends.
"""

from __future__ import annotations

import asyncio

from ..events import GatewayError
from ..limits import Limiter, Ticket
from ..router import Candidate

_pending: set[asyncio.Task[None]] = set()  # releases under way (a reference keeps them)


async def admit(limiter: Limiter, candidate: Candidate) -> Ticket | None:
    """A ticket for one attempt on ``candidate``'s channel, ``None`` when it has no
    limit; ``GatewayError`` (429) when the channel is at its limit."""
    limits = candidate.limits
    if limits is None:
        return None
    name = candidate.deployment.provider.name
    try:
        return await limiter.acquire(f"channel:{name}", limits, 0)
    except GatewayError as error:
        if error.status != 429:
            raise
        which = error.headers.get("x-ratelimit-limit-name", "rate")
        value = limits.rpm if which == "rpm" else limits.max_concurrent
        what = "requests per minute" if which == "rpm" else "concurrent requests"
        raise GatewayError(
            "rate_limit",
            f"The channel {name} is at its limit of {value} {what}, and no other "
            "deployment of this model is free.",
            status=429,
            code="channel_rate_limited",
            headers=dict(error.headers),
        ) from None


def release(limiter: Limiter, ticket: Ticket) -> None:
    """Give the attempt's slot back, off the caller's path."""
    task = asyncio.ensure_future(limiter.release(ticket, 0))
    _pending.add(task)
    task.add_done_callback(_pending.discard)
