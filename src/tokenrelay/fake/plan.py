"""Stream plans: the exact bytes of a response, computed once and replayed by the server.

A plan is a list of SSE events (one transport write each), their HTTP/1.1 chunked
framing, and what happens after the last one (``finish``: the chunked terminator;
``drop``: close the connection; ``stall``: nothing). Faults are transformations of the
event list, so they behave the same for synthetic and recorded streams.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from .options import Script, ScriptError
from .wire import Proto, inband_error

__all__ = ["TERMINATOR", "End", "StreamPlan", "build_plan", "frame", "split_events"]

End = Literal["finish", "drop", "stall"]

TERMINATOR = b"0\r\n\r\n"
"""The last chunk of a chunked body."""

BAD_UTF8 = b"\xff\xfe\xc3("
"""Bytes that are not UTF-8 (an invalid lead byte and a truncated sequence)."""

_STRING_VALUE = re.compile(
    rb'"(?:text|content|partial_json|thinking|arguments|reasoning_content|reasoning|delta)"'
    rb'\s*:\s*"'
)
_ANY_STRING_VALUE = re.compile(rb':\s*"')


def frame(event: bytes) -> bytes:
    """One HTTP/1.1 chunk holding ``event``."""
    return b"%x\r\n%b\r\n" % (len(event), event)


class StreamPlan:
    """The events of one response, framed for chunked transfer, and how it ends."""

    __slots__ = ("end", "events", "framed")

    def __init__(self, events: list[bytes], end: End = "finish") -> None:
        self.events = events
        self.framed = [frame(e) for e in events if e]
        self.end: End = end


def split_events(data: bytes) -> list[bytes]:
    """Cut a recorded SSE body into events, each up to and including the blank line that
    dispatches it. Blocks that dispatch nothing (comments, stray blank lines) stay with
    the event that follows them; trailing bytes stay with the last event. The pieces
    concatenate to ``data`` exactly."""
    events: list[bytes] = []
    start = 0
    pos = 0
    has_data = False
    for line in data.splitlines(keepends=True):
        end = pos + len(line)
        content = line.rstrip(b"\r\n")
        if not content:
            if has_data:
                events.append(data[start:end])
                start = end
                has_data = False
        elif content[:4] == b"data" and content[4:5] in (b":", b""):
            has_data = True
        pos = end
    if start < len(data):
        if events:
            events[-1] += data[start:]
        else:
            events.append(data[start:])
    return events


def _line_end(line: bytes) -> bytes:
    return line[len(line.rstrip(b"\r\n")) :] or b"\n"


def malform(event: bytes) -> bytes:
    """The event with its data replaced by ``{"broken`` (other fields kept)."""
    out: list[bytes] = []
    replaced = False
    ending = b"\n"
    for line in event.splitlines(keepends=True):
        ending = _line_end(line)
        if line.startswith(b"data"):
            if not replaced:
                out.append(b'data: {"broken' + ending)
                replaced = True
        elif line.rstrip(b"\r\n"):
            out.append(line)
    if not replaced:
        out.append(b'data: {"broken' + ending)
    return b"".join(out) + ending


def break_utf8(event: bytes) -> bytes:
    """The event with invalid UTF-8 inserted at the start of a JSON string value
    (preferably the text); an event without one gets a data line that has one."""
    match = _STRING_VALUE.search(event) or _ANY_STRING_VALUE.search(event)
    if match is not None:
        return event[: match.end()] + BAD_UTF8 + event[match.end() :]
    return malform(event).replace(b'data: {"broken', b'data: {"text":"' + BAD_UTF8 + b'"}', 1)


def _at(option: str, index: int | None, events: Sequence[bytes]) -> int | None:
    if index is not None and index >= len(events):
        raise ScriptError(f"{option}={index}, but the stream has only {len(events)} events")
    return index


def build_plan(events: list[bytes], script: Script, proto: Proto) -> StreamPlan:
    """Apply the script's stream faults to ``events``. ``no_done`` is the caller's job
    (the generators leave the terminator out; replay drops the last event)."""
    malformed = _at("malformed_at", script.malformed_at, events)
    bad = _at("bad_utf8_at", script.bad_utf8_at, events)
    if malformed is not None or bad is not None:
        events = list(events)
        if malformed is not None:
            events[malformed] = malform(events[malformed])
        if bad is not None:
            events[bad] = break_utf8(events[bad])
    cuts: list[tuple[int, End | None]] = []
    if script.error_after is not None:
        cuts.append((script.error_after, None))
    if script.drop_after is not None:
        cuts.append((script.drop_after, "drop"))
    if script.stall_after is not None:
        cuts.append((script.stall_after, "stall"))
    if not cuts:
        return StreamPlan(events)
    at, how = min(cuts, key=lambda cut: cut[0])
    kept = events[:at]
    if how is None:
        return StreamPlan([*kept, inband_error(proto)])
    return StreamPlan(kept, how)


def read_replay(fixtures: Path | None, script: Script) -> bytes:
    """The recorded body a ``replay/<provider>/<stem>`` script names."""
    if fixtures is None:
        raise ScriptError("replay needs a fixtures folder (--fixtures / start(fixtures=...))", 404)
    path = fixtures / script.provider / f"{script.stem}.sse"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ScriptError(f"no recorded stream {script.provider}/{script.stem}.sse", 404) from None
    except OSError as exc:  # unreadable file: report it to the client, keep serving
        raise ScriptError(f"cannot read {path}: {exc}", 500) from None
