"""HTTP/1.1 pieces of the fake upstream: parsed requests, planned replies, the log
record, and the bytes of a response head."""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from .plan import End, StreamPlan
from .sent import summarize
from .wire import Proto

__all__ = ["Reply", "Request", "RequestRecord", "response_head"]

_EXTRA_REASONS = {529: "Overloaded"}


@dataclass(slots=True)
class Request:
    """One parsed request. ``url`` is the raw request target (path and query, still
    percent-encoded); ``headers`` has lower-case names, repeated fields joined by ', '."""

    method: str
    url: bytes
    headers: dict[str, str]
    body: bytes
    started: float
    keep_alive: bool
    http11: bool


@dataclass(slots=True)
class Reply:
    """What to send: a plain body, or a stream plan. ``delay`` is waited before the
    first byte of a plain body; a stream sends its head at once and its first event
    after ``delay`` (time to first token), then one event every ``gap`` seconds.
    ``end`` applies to plain bodies (a stream plan has its own). ``head_delay`` is
    waited before anything is sent, the status line included."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: StreamPlan | None = None
    delay: float = 0.0
    head_delay: float = 0.0
    gap: float = 0.0
    end: End = "finish"
    model: str | None = None
    log: bool = True


@dataclass(slots=True, eq=False)
class RequestRecord:
    """What the fake upstream saw of one request and how its response went.

    Times are ``time.time()`` seconds. ``ended`` is when the response finished, the
    server dropped the connection, or the client closed it, whichever came first
    (``None`` while a response is still running or stalled). ``client_closed`` is true
    when the client closed the connection before the response was complete. ``sent``
    (JSON only) summarises the events a stream wrote: counts reported, content chars.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    started: float
    model: str | None = None
    status: int | None = None
    ended: float | None = None
    events_sent: int = 0
    complete: bool = False
    client_closed: bool = False
    plan: tuple[Proto, list[bytes]] | None = None  # a stream's wire and its events
    key: str | None = None  # the API key it came with, by its last 4 characters

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict (the ``GET /_fake/log`` item)."""
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
            "model": self.model,
            "status": self.status,
            "started": self.started,
            "ended": self.ended,
            "events_sent": self.events_sent,
            "complete": self.complete,
            "client_closed": self.client_closed,
            "key": self.key,
            "sent": self._sent(),
        }

    def _sent(self) -> dict[str, Any] | None:
        """What was written of a stream (``sent.summarize``), for usage checks."""
        if self.plan is None:
            return None
        proto, events = self.plan
        return summarize(proto, [e for e in events if e][: self.events_sent]).to_json()


def reason(status: int) -> str:
    """The reason phrase for a status code."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return _EXTRA_REASONS.get(status, "Unknown")


def response_head(
    status: int,
    content_type: str,
    *,
    length: int | None,
    keep_alive: bool,
    chunked: bool = False,
    headers: list[tuple[str, str]] | None = None,
) -> bytes:
    """Status line and headers. A body is ``chunked``, or ``length`` bytes long, or
    (neither: an HTTP/1.0 stream) delimited by closing the connection."""
    lines = [f"HTTP/1.1 {status} {reason(status)}", f"content-type: {content_type}"]
    if chunked:
        lines.append("transfer-encoding: chunked")
    elif length is not None:
        lines.append(f"content-length: {length}")
    if content_type == "text/event-stream":
        lines.append("cache-control: no-cache")
    if not keep_alive:
        lines.append("connection: close")
    lines.append("server: tokenrelay-fake")
    if headers:
        lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
