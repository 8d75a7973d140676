"""Server-Sent Events: the one decoder and the one encoder in tokenrelay.

Pure: no I/O. The decoder follows the WHATWG event-stream rules (CR, LF and CRLF line
endings, a CR at the end of one read paired with an LF at the start of the next,
multi-line ``data``, comments, ``id``/``event``/``retry``) and accepts bytes split at any
point, including inside a UTF-8 character: it splits lines on bytes (CR and LF never
occur inside a multi-byte UTF-8 sequence) and decodes only whole lines.

A line may be many MiB long (a base64 image): pieces of an unfinished line are kept in
a list and joined once, so a long line costs linear time however it is split.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["SSEDecoder", "ServerSentEvent", "encode", "encode_comment"]


class ServerSentEvent:
    """One dispatched event. ``event`` is ``None`` when no ``event:`` field was given
    (the spec's default type, ``message``). ``id`` is the last event id in force."""

    __slots__ = ("data", "event", "id", "retry")

    def __init__(
        self, data: str, event: str | None = None, id: str | None = None, retry: int | None = None
    ) -> None:
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServerSentEvent):
            return NotImplemented
        return (self.data, self.event, self.id, self.retry) == (
            other.data,
            other.event,
            other.id,
            other.retry,
        )

    def __repr__(self) -> str:
        return f"ServerSentEvent(data={self.data!r}, event={self.event!r}, id={self.id!r}, retry={self.retry!r})"


class SSEDecoder:
    """Incremental decoder: ``feed(bytes) -> [events]``, then ``flush()`` at end of stream.

    ``flush`` drops an event that was not terminated by a blank line, as browsers do;
    ``comments`` counts comment lines seen (keep-alives), for callers that care.
    """

    __slots__ = ("_pending", "_skip_lf", "_data", "_event", "_retry", "last_event_id", "comments")

    def __init__(self) -> None:
        self._pending: list[bytes] = []  # pieces of an unfinished line (no CR/LF inside)
        self._skip_lf = False  # the previous read ended in CR: a leading LF belongs to it
        self._data: list[str] = []
        self._event: str | None = None
        self._retry: int | None = None
        self.last_event_id: str | None = None
        self.comments = 0

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            if chunk[-1:] == b"\r":
                self._skip_lf = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in chunk:
            if chunk:
                self._pending.append(chunk)
            return []
        if self._pending:
            self._pending.append(chunk)
            chunk = b"".join(self._pending)
            self._pending = []
        lines = chunk.split(b"\n")
        tail = lines.pop()
        if tail:
            self._pending.append(tail)
        out: list[ServerSentEvent] = []
        for line in lines:
            if not line:
                if self._data:
                    out.append(
                        ServerSentEvent(
                            "\n".join(self._data), self._event, self.last_event_id, self._retry
                        )
                    )
                    self._data = []
                self._event = None
                self._retry = None
            elif line[:6] == b"data: ":
                self._data.append(line[6:].decode("utf-8", "replace"))
            else:
                self._field(line)
        return out

    def _field(self, line: bytes) -> None:
        if line[:1] == b":":
            self.comments += 1
            return
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self.last_event_id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value.isdigit():
                self._retry = int(value)

    def flush(self) -> list[ServerSentEvent]:
        """End of stream. An unterminated final line is still a line; an event without
        its closing blank line is discarded (WHATWG)."""
        if self._pending:
            line = b"".join(self._pending)
            self._pending = []
            if line[:6] == b"data: ":
                self._data.append(line[6:].decode("utf-8", "replace"))
            else:
                self._field(line)
        self._data = []
        self._event = None
        self._retry = None
        self._skip_lf = False
        return []

    def iter(self, chunks: Iterable[bytes]) -> Iterable[ServerSentEvent]:
        """Decode a whole iterable of chunks (tests, tools)."""
        for chunk in chunks:
            yield from self.feed(chunk)
        yield from self.flush()


def _check_field(name: str, value: str) -> None:
    if "\n" in value or "\r" in value or (name == "id" and "\0" in value):
        raise ValueError(f"SSE {name} must not contain line breaks: {value!r}")


def encode(
    data: bytes | str,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """One event as bytes. Multi-line ``data`` becomes several ``data:`` lines;
    ``event`` and ``id`` must be single lines (a line break would forge fields)."""
    if isinstance(data, str):
        data = data.encode()
    head = b""
    if event is not None:
        _check_field("event", event)
        head += b"event: " + event.encode() + b"\n"
    if id is not None:
        _check_field("id", id)
        head += b"id: " + id.encode() + b"\n"
    if retry is not None:
        head += b"retry: %d\n" % retry
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
    return head + b"data: " + data + b"\n\n"


def encode_comment(text: str = "") -> bytes:
    """A comment line (``: text``), used as keep-alive; ignored by every SSE client."""
    _check_field("comment", text)
    return b": " + text.encode() + b"\n\n" if text else b":\n\n"
