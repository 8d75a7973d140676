"""Server-Sent Events: the one decoder and the one encoder in tokenrelay.

Pure: no I/O. The decoder follows the WHATWG event-stream rules (CR, LF and CRLF line
endings, a CR at the end of one read paired with an LF at the start of the next, one
leading BOM dropped, multi-line ``data``, comments, ``id``/``event``/``retry``) and
accepts bytes split at any point, including inside a UTF-8 character: it splits lines on
bytes (CR and LF never occur inside a multi-byte UTF-8 sequence) and decodes only whole
lines.

A line may be many MiB long (a base64 image): pieces of an unfinished line are kept in
a list and joined once, so a long line costs linear time however it is split.

``SSEDataDecoder`` decodes the same way and gives each event's data as the bytes that
came (no ``str``, no event object): what a passthrough that forwards the frames needs.
``SSENamedDecoder`` gives each event's name and data, both as bytes: for a passthrough
of named events (the Responses wire), which forwards both as they came.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import suppress
from typing import Generic, TypeVar

__all__ = [
    "SSEDataDecoder",
    "SSEDecoder",
    "SSENamedDecoder",
    "ServerSentEvent",
    "encode",
    "encode_comment",
]

T = TypeVar("T")

_BOM = b"\xef\xbb\xbf"  # U+FEFF in UTF-8; one at the start of a stream is not content
_START, _SKIP_LF = 1, 2  # SSEDecoder._head states (0: nothing to do)


class ServerSentEvent:
    """One dispatched event. ``event`` is ``None`` when no (or an empty) ``event:`` field
    was given: the spec's default type, ``message``. ``id`` is the last event id in force.
    ``retry`` is a valid ``retry:`` value given in the same block, else ``None``."""

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


class _Decoder(Generic[T]):
    """Incremental decoder: ``feed(bytes) -> [events]``, then ``flush()`` at end of stream.

    ``last_event_id`` is the spec's *last event ID string*: it takes the value of the
    latest valid ``id`` field when a blank line ends a block (with or without data), so a
    stream cut inside an event does not advance it; it is what to send as
    ``Last-Event-ID`` on reconnection. ``comments`` counts comment lines seen
    (keep-alives), for callers that care.
    """

    __slots__ = (
        "_data",
        "_event",
        "_head",
        "_id",
        "_pending",
        "_retry",
        "comments",
        "last_event_id",
    )

    def __init__(self) -> None:
        self._pending: list[bytes] = []  # pieces of an unfinished line (no CR/LF inside)
        self._head = _START  # what the start of the next read needs, see _fix_head
        self._data: list[bytes] = []  # the block's data lines, undecoded
        self._event: bytes | None = None  # undecoded; b"" or absent: the default type
        self._retry: int | None = None
        self._id: str | None = None  # the spec's last event ID buffer
        self.last_event_id: str | None = None
        self.comments = 0

    def _dispatch(self, data: bytes) -> T:
        raise NotImplementedError

    def feed(self, chunk: bytes) -> list[T]:
        if self._head:
            chunk = self._fix_head(chunk)
        # bytes.splitlines breaks on LF, CR and CRLF and on nothing else: the SSE line ends.
        lines = chunk.splitlines()
        if not lines:
            return []
        end = chunk[-1]
        if end == 10:  # LF: every line is complete
            tail = b""
        elif end == 13:  # CR: an LF at the start of the next read belongs to it
            self._head = _SKIP_LF
            tail = b""
        else:  # the last line is unfinished
            tail = lines.pop()
            if not lines:
                self._pending.append(tail)
                return []
        if self._pending:
            self._pending.append(lines[0])
            lines[0] = b"".join(self._pending)
            self._pending = []
        if tail:
            self._pending.append(tail)
        out: list[T] = []
        for line in lines:
            if not line:
                self.last_event_id = self._id
                data = self._data
                if data:
                    out.append(self._dispatch(data[0] if len(data) == 1 else b"\n".join(data)))
                    self._data = []
                self._event = None
                self._retry = None
            elif line[:6] == b"data: ":
                self._data.append(line[6:])
            elif line[:7] == b"event: ":  # named events' first line: no partition
                self._event = line[7:]
            else:
                self._field(line)
        return out

    def _fix_head(self, chunk: bytes) -> bytes:
        """The rare reads that need care at their start: after a read that ended in CR,
        and at stream start, where one UTF-8 BOM is dropped (its bytes may arrive in
        several reads; they wait in ``_pending`` meanwhile)."""
        if self._head == _SKIP_LF:
            if not chunk:
                return chunk
            self._head = 0
            return chunk[1:] if chunk[0] == 10 else chunk
        if self._pending:
            chunk = self._pending[0] + chunk
            self._pending = []
        if len(chunk) < 3 and _BOM.startswith(chunk):
            if chunk:
                self._pending.append(chunk)
            return b""
        self._head = 0
        return chunk[3:] if chunk[:3] == _BOM else chunk

    def _field(self, line: bytes) -> None:
        if line[:1] == b":":
            self.comments += 1
            return
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value
        elif name == b"id":
            if b"\0" not in value:
                self._id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():  # bytes.isdigit: ASCII digits only
            with suppress(ValueError):  # longer than int()'s digit limit (4300): ignored
                self._retry = int(value)

    def flush(self) -> list[T]:
        """End of stream. Pending data is discarded (WHATWG): an event without its closing
        blank line is not dispatched, and an unterminated last line is not processed.
        ``last_event_id`` is kept; the decoder is then ready for the next stream (a
        reconnection), whose leading BOM, if any, is dropped too."""
        self._pending = []
        self._head = _START
        self._data = []
        self._event = None
        self._retry = None
        self._id = self.last_event_id
        return []

    def iter(self, chunks: Iterable[bytes]) -> Iterable[T]:
        """Decode a whole iterable of chunks (tests, tools)."""
        for chunk in chunks:
            yield from self.feed(chunk)
        yield from self.flush()


class SSEDecoder(_Decoder[ServerSentEvent]):
    __doc__ = _Decoder.__doc__

    def _dispatch(self, data: bytes) -> ServerSentEvent:
        # Invalid UTF-8 becomes U+FFFD, as in a browser's EventSource. An empty event
        # type means the default type, as no event field does.
        event = self._event.decode("utf-8", "replace") or None if self._event else None
        return ServerSentEvent(data.decode("utf-8", "replace"), event, self._id, self._retry)


class SSEDataDecoder(_Decoder[bytes]):
    """The same decoding; each event gives only its data, as the bytes that came (lines
    joined with LF), undecoded: invalid UTF-8 stays as it is."""

    def _dispatch(self, data: bytes) -> bytes:
        return data


class SSENamedDecoder(_Decoder[tuple[bytes | None, bytes]]):
    """The same decoding; each event gives ``(name, data)`` as the bytes that came,
    undecoded (``name`` None for the default type, as ``ServerSentEvent.event``)."""

    def _dispatch(self, data: bytes) -> tuple[bytes | None, bytes]:
        return self._event or None, data


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
        data = data.encode("utf-8", "replace")  # a lone surrogate cannot be sent: "?"
    head = b""
    if event is not None:
        _check_field("event", event)
        head += b"event: " + event.encode() + b"\n"
    if id is not None:
        _check_field("id", id)
        head += b"id: " + id.encode() + b"\n"
    if retry is not None:
        if retry < 0:
            raise ValueError(f"SSE retry must be a non-negative integer: {retry!r}")
        head += b"retry: %d\n" % retry
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
    return head + b"data: " + data + b"\n\n"


def encode_comment(text: str = "") -> bytes:
    """A comment line (``: text``), used as keep-alive; ignored by every SSE client."""
    _check_field("comment", text)
    return b": " + text.encode() + b"\n\n" if text else b":\n\n"
