"""The SSE codec against the WHATWG event-stream rules.

The reference model below is written from the spec ("Parsing an event stream" and
"Interpreting an event stream", HTML Living Standard section 9.2) and shares no code with
``tokenrelay.sse``: it decodes the whole stream at once, drops one leading U+FEFF, splits
lines on CRLF, LF and CR with a regular expression and interprets them one by one. The
decoder must agree with it however the bytes are cut into reads.

Where the decoder goes beyond the spec, the model follows the decoder's documented API:
``retry`` is reported on the event of the block it appeared in (the spec only sets the
stream's reconnection time), and an ``event`` type of "" is reported as ``None`` (both
mean the default type, ``message``).
"""

from __future__ import annotations

import base64
import bisect
import json
import random
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.paths import fixture_files, fixtures_dir

from tokenrelay.sse import (
    ServerSentEvent,
    SSEDataDecoder,
    SSEDecoder,
    SSENamedDecoder,
    encode,
    encode_comment,
)

Event = tuple[str, str | None, str | None, int | None]  # data, event, id, retry

SETTINGS = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------
# Reference model (spec text, whole stream, no incremental state)
# ---------------------------------------------------------------------------------------

_LINE_END = re.compile(r"\r\n|\r|\n")
_ASCII_DIGITS = frozenset("0123456789")


class Model:
    """The spec's interpretation of a complete stream, given as text."""

    def __init__(self, text: str) -> None:
        if text.startswith("\ufeff"):  # one leading BOM is ignored
            text = text[1:]
        lines = _LINE_END.split(text)
        lines.pop()  # what follows the last line ending is not a line: discarded at EOF
        self.events: list[Event] = []
        self.last_event_id: str | None = None  # the event source's last event ID string
        self.comments = 0
        data_buffer = ""
        event_type_buffer = ""
        last_event_id_buffer: str | None = None
        retry: int | None = None
        for line in lines:
            if line == "":  # dispatch
                self.last_event_id = last_event_id_buffer
                if data_buffer != "":
                    if data_buffer.endswith("\n"):
                        data_buffer = data_buffer[:-1]
                    self.events.append(
                        (data_buffer, event_type_buffer or None, last_event_id_buffer, retry)
                    )
                data_buffer = ""
                event_type_buffer = ""
                retry = None
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            if ":" in line:
                field, _, value = line.partition(":")
                if value.startswith(" "):
                    value = value[1:]
            else:
                field, value = line, ""
            if field == "data":
                data_buffer += value + "\n"
            elif field == "event":
                event_type_buffer = value
            elif field == "id":
                if "\0" not in value:
                    last_event_id_buffer = value
            elif field == "retry" and value and set(value) <= _ASCII_DIGITS:
                retry = int(value)
            # any other field is ignored


def _as_tuples(events: Iterable[ServerSentEvent]) -> list[Event]:
    return [(e.data, e.event, e.id, e.retry) for e in events]


def _decode(pieces: Iterable[bytes], decoder: SSEDecoder | None = None) -> list[Event]:
    d = SSEDecoder() if decoder is None else decoder
    out: list[ServerSentEvent] = []
    for piece in pieces:
        out += d.feed(piece)
    out += d.flush()
    return _as_tuples(out)


def _cut(raw: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``raw`` cut at the given offsets (any order, repeats allowed: empty reads)."""
    points = sorted(cuts)
    return [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]


def _check_against_model(raw: bytes, text: str, cuts: Sequence[int]) -> None:
    model = Model(text)
    d = SSEDecoder()
    assert _decode(_cut(raw, cuts), d) == model.events
    assert d.last_event_id == model.last_event_id
    assert d.comments == model.comments


# ---------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------

# Characters that are interesting to an SSE decoder or to UTF-8 splitting, next to the
# whole of Unicode (minus surrogates, which have no UTF-8 form) that st.characters offers.
_SPECIAL = list("中文字の😀🎉👩‍👧é :\x00\ufeff\u2028\u2029\x85\x0b\x0c\x1c\x1e\t")
_char = st.one_of(
    st.characters(codec="utf-8", exclude_characters="\r\n"), st.sampled_from(_SPECIAL)
)
_value = st.text(_char, max_size=12)
_sep = st.sampled_from([":", ": ", ":  "])


def _field(names: st.SearchStrategy[str], values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(names, _sep, values).map("".join)


_retry_value = st.one_of(
    st.from_regex(r"\A[0-9]{1,7}\Z"),
    st.sampled_from(["", "12a", "-1", " 5", "+3", "1.5", "١٢", "²", "0x10", "007"]),
    _value,
)
_line = st.one_of(
    st.just(""),
    st.just(""),
    _field(st.just("data"), _value),
    _field(st.just("data"), _value),
    _field(st.just("event"), _value),
    _field(st.just("id"), st.one_of(_value, _value.map(lambda v: v + "\0"))),
    _field(st.just("retry"), _retry_value),
    st.tuples(st.just(":"), _value).map("".join),
    _field(
        st.sampled_from(["", "Data", "DATA", "ID", "events", "id ", " data", "\ufeffdata", "x"]),
        _value,
    ),
    st.sampled_from(["data", "event", "id", "retry", "foo", ":"]),
)
_ending = st.sampled_from(["\n", "\r", "\r\n"])


@st.composite
def event_streams(draw: st.DrawFn) -> str:
    """Lines joined with a line ending drawn per line, maybe a BOM first, maybe an
    unterminated last line. CR followed by an empty line ending in LF reads as one CRLF:
    the model splits the joined text, so it sees exactly what the decoder must see."""
    lines = draw(st.lists(_line, max_size=40))
    endings = draw(st.lists(_ending, min_size=len(lines), max_size=len(lines)))
    head = draw(st.sampled_from(["", "", "\ufeff", "\ufeff\ufeff"]))
    tail = draw(st.one_of(st.just(""), _line))
    return head + "".join(map("".join, zip(lines, endings, strict=True))) + tail


@st.composite
def cut_points(draw: st.DrawFn, raw: bytes, max_cuts: int = 24) -> list[int]:
    """Offsets to cut ``raw`` at: anywhere, with a bias to the places that need care
    (just after a CR, inside a UTF-8 sequence) and to repeated offsets (empty reads)."""
    tricky = [i + 1 for i, b in enumerate(raw) if b == 0x0D]
    tricky += [i for i, b in enumerate(raw) if 0x80 <= b < 0xC0]
    anywhere = st.integers(0, len(raw))
    points = draw(
        st.lists(
            st.one_of(anywhere, st.sampled_from(tricky)) if tricky else anywhere, max_size=max_cuts
        )
    )
    if points:
        points += draw(st.lists(st.sampled_from(points), max_size=4))
    return points


# Byte-level tokens for streams that need not be valid UTF-8.
_TOKENS = [
    b"data", b"data:", b"data: ", b"id:", b"id: ", b"event: ", b"retry:", b"retry: ",
    b":", b" ", b"\r", b"\n", b"\r\n", b"x", b"1", b"42", b"\x00", b"\xef\xbb\xbf",
    b"\xef", b"\xef\xbb", b"\xbb", b"\xbf", b"\xe4\xb8\xad", b"\xf0\x9f\x98\x80",
    b"\xf0\x9f", b"\x80", b"\xc3", b"\xff", b"\xc0\xaf", b"\xed\xa0\x80",
]  # fmt: skip


# ---------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------


@SETTINGS
@given(st.data())
def test_decoder_matches_model_however_split(data: st.DataObject) -> None:
    text = data.draw(event_streams(), label="text")
    raw = text.encode("utf-8")
    cuts = data.draw(cut_points(raw), label="cuts")
    _check_against_model(raw, text, cuts)


@settings(deadline=None, max_examples=200)
@given(st.data())
def test_decoder_matches_model_on_arbitrary_bytes(data: st.DataObject) -> None:
    """Invalid UTF-8 anywhere (also cut in the middle) decodes as the spec's whole-stream
    UTF-8 decode with replacement characters would: CR and LF never sit inside a
    sequence, so decoding line by line cannot differ."""
    parts = data.draw(
        st.lists(st.one_of(st.sampled_from(_TOKENS), st.binary(max_size=4)), max_size=60),
        label="parts",
    )
    raw = b"".join(parts)
    cuts = data.draw(cut_points(raw), label="cuts")
    _check_against_model(raw, raw.decode("utf-8", "replace"), cuts)


@settings(deadline=None, max_examples=200)
@given(st.data())
def test_the_data_decoder_gives_the_same_data_undecoded(data: st.DataObject) -> None:
    """``SSEDataDecoder`` on any bytes, cut anywhere: each event's data as it came, which
    decodes (with replacement) to what ``SSEDecoder`` gives."""
    parts = data.draw(
        st.lists(st.one_of(st.sampled_from(_TOKENS), st.binary(max_size=4)), max_size=60),
        label="parts",
    )
    raw = b"".join(parts)
    pieces = list(_cut(raw, data.draw(cut_points(raw), label="cuts")))
    payloads = list(SSEDataDecoder().iter(pieces))
    assert all(isinstance(p, bytes) for p in payloads)
    events = list(SSEDecoder().iter(pieces))
    assert [p.decode("utf-8", "replace") for p in payloads] == [e.data for e in events]


@settings(deadline=None, max_examples=200)
@given(st.data())
def test_the_named_decoder_gives_the_same_names_and_data_undecoded(data: st.DataObject) -> None:
    """``SSENamedDecoder`` on any bytes, cut anywhere: each event's name and data as
    they came, which decode (with replacement) to what ``SSEDecoder`` gives."""
    parts = data.draw(
        st.lists(st.one_of(st.sampled_from(_TOKENS), st.binary(max_size=4)), max_size=60),
        label="parts",
    )
    raw = b"".join(parts)
    pieces = list(_cut(raw, data.draw(cut_points(raw), label="cuts")))
    named = list(SSENamedDecoder().iter(pieces))
    events = list(SSEDecoder().iter(pieces))
    assert [
        (n.decode("utf-8", "replace") if n is not None else None, d.decode("utf-8", "replace"))
        for n, d in named
    ] == [(e.event, e.data) for e in events]


@SETTINGS
@given(st.data())
def test_one_byte_reads_and_one_read_agree(data: st.DataObject) -> None:
    text = data.draw(event_streams(), label="text")
    raw = text.encode("utf-8")
    whole = _decode([raw])
    assert _decode(raw[i : i + 1] for i in range(len(raw))) == whole
    assert whole == Model(text).events


_single_line = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"))
_any_text = st.lists(
    st.one_of(st.characters(codec="utf-8"), st.sampled_from(["\r\n", "\n\r", *_SPECIAL]))
).map("".join)


@SETTINGS
@given(
    data=_any_text,
    event=st.none() | _single_line,
    id=st.none() | st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0")),
    retry=st.none() | st.integers(0, 2**64),
    as_bytes=st.booleans(),
)
def test_encode_decode_round_trip(
    data: str, event: str | None, id: str | None, retry: int | None, as_bytes: bool
) -> None:
    raw = encode(data.encode() if as_bytes else data, event=event, id=id, retry=retry)
    # Line breaks inside data come back as LF, whichever form they had (spec).
    expected = (data.replace("\r\n", "\n").replace("\r", "\n"), event or None, id, retry)
    assert _decode([raw]) == [expected]
    assert Model(raw.decode()).events == [expected]  # the encoder writes what the spec reads


_message = st.tuples(
    _any_text,
    st.none() | _single_line,
    st.none() | st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0"), max_size=5),
)


@SETTINGS
@given(st.data())
def test_encoded_stream_round_trip_with_comments_and_id_persistence(
    data: st.DataObject,
) -> None:
    items = data.draw(
        st.lists(st.one_of(_message, _single_line.map(lambda c: (c,))), max_size=12),
        label="items",
    )
    raw = b""
    expected: list[Event] = []
    comments = 0
    last_id: str | None = None
    for item in items:
        if len(item) == 1:
            raw += encode_comment(item[0])
            comments += 1
            continue
        body, event, id = item
        raw += encode(body, event=event, id=id)
        if id is not None:
            last_id = id
        expected.append(
            (body.replace("\r\n", "\n").replace("\r", "\n"), event or None, last_id, None)
        )
    d = SSEDecoder()
    assert _decode(_cut(raw, data.draw(cut_points(raw), label="cuts")), d) == expected
    assert d.comments == comments
    assert d.last_event_id == last_id


@settings(deadline=None, max_examples=100)
@given(
    st.sampled_from(["event", "id"]),
    _single_line,
    st.sampled_from(["\n", "\r", "\r\n"]),
    _single_line,
)
def test_encode_rejects_line_breaks_in_event_and_id(
    field: str, before: str, brk: str, after: str
) -> None:
    with pytest.raises(ValueError):
        encode("x", **{field: before + brk + after})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode_comment(before + brk + after)


def test_encode_rejects_nul_in_id_and_negative_retry() -> None:
    with pytest.raises(ValueError):
        encode("x", id="a\0b")  # a decoder would ignore this id
    with pytest.raises(ValueError):
        encode("x", retry=-1)  # a decoder would ignore this retry


def test_encode_shapes() -> None:
    assert encode("hi") == b"data: hi\n\n"
    assert encode(b"a\r\nb\rc\n") == b"data: a\ndata: b\ndata: c\ndata: \n\n"
    assert encode("", event="e", id="7", retry=10) == b"event: e\nid: 7\nretry: 10\ndata: \n\n"
    assert encode_comment() == b":\n\n"
    assert encode_comment("keep-alive") == b": keep-alive\n\n"


# ---------------------------------------------------------------------------------------
# Explicit cases
# ---------------------------------------------------------------------------------------


def _events(*pieces: bytes) -> list[Event]:
    return _decode(pieces)


def _five_mib_line() -> tuple[bytes, str]:
    payload = base64.b64encode(random.Random(5).randbytes(5 * 1024 * 1024 * 3 // 4))
    assert len(payload) == 5 * 1024 * 1024
    return b"data: " + payload + b"\r\n\r\n", payload.decode()


@pytest.mark.parametrize("size", [7, 64 * 1024], ids=["7B", "64KiB"])
def test_five_mib_line_in_small_pieces(size: int) -> None:
    """Linear however the line is cut: a quadratic join would not finish in time."""
    raw, payload = _five_mib_line()
    d = SSEDecoder()
    out: list[ServerSentEvent] = []
    for i in range(0, len(raw), size):
        out += d.feed(raw[i : i + size])
    out += d.flush()
    assert len(out) == 1
    assert out[0].data == payload


def test_five_mib_line_then_more_events_in_one_read() -> None:
    raw, payload = _five_mib_line()
    assert _events(raw[:100], raw[100:] + b"data: next\n\n") == [
        (payload, None, None, None),
        ("next", None, None, None),
    ]


@pytest.mark.parametrize("char", ["é", "中", "€", "😀", "\ufeff", "\U0010ffff"])
def test_utf8_char_split_at_every_position(char: str) -> None:
    raw = f"data: a{char}b{char}\n\n".encode()
    expected = [(f"a{char}b{char}", None, None, None)]
    for i in range(len(raw) + 1):
        assert _events(raw[:i], raw[i:]) == expected, i
        for j in range(i, len(raw) + 1):
            assert _events(raw[:i], raw[i:j], raw[j:]) == expected, (i, j)


def test_cr_lf_across_reads_is_one_line_break() -> None:
    one = [("a\nb", None, None, None)]
    assert _events(b"data: a\r", b"\ndata: b\r\n\r\n") == one
    assert _events(b"data: a\r", b"", b"\ndata: b\r", b"", b"", b"\n\r\n") == one
    assert _events(b"data: a\r", b"\n", b"data: b\r", b"\n", b"\r", b"\n") == one
    # CR CR is two line ends (a blank line), and so is CR then CRLF; LF CR is two too.
    assert _events(b"data: a\r", b"\rdata: b\r\n\r\n") == [
        ("a", None, None, None),
        ("b", None, None, None),
    ]
    assert _events(b"data: a\r", b"\r\n") == [("a", None, None, None)]
    assert _events(b"data: a\n", b"\rdata: b\n\n") == [
        ("a", None, None, None),
        ("b", None, None, None),
    ]


def test_only_cr_lf_crlf_end_lines() -> None:
    odd = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # line breaks for str.splitlines, not SSE
    assert _events(f"data: {odd}\n\n".encode()) == [(odd, None, None, None)]


def test_bom_at_stream_start_is_dropped_once() -> None:
    bom = b"\xef\xbb\xbf"
    one = [("x", None, None, None)]
    raw = bom + b"data: x\n\n"
    for i in range(len(raw) + 1):  # also with the BOM itself cut into reads
        assert _events(raw[:i], raw[i:]) == one, i
    assert _events(bom[:1], bom[1:2], b"", bom[2:], b"data: x\n\n") == one
    # A second BOM is content: the line is then a field named "\ufeffdata", ignored.
    assert _events(bom + bom + b"data: x\n\n") == []
    # Not at stream start: content too.
    assert _events(b"data: x\n\n", bom + b"data: y\n\n") == one
    assert _events(b"data: x\n\n" + bom + b"data: y\n\n") == one
    # A BOM prefix that turns out not to be one is content (a replacement character).
    assert _events(b"\xef\xbb", b"data: x\n\n") == []
    assert _events(b"\xef\xbb", b"\n", b"data: x\n\n") == one
    assert _events(b"\xef", b"\xbb") == []


def test_data_field_forms() -> None:
    assert _events(b"data\n\n") == [("", None, None, None)]
    assert _events(b"data:\n\n") == [("", None, None, None)]
    assert _events(b"data:x\n\n") == [("x", None, None, None)]
    assert _events(b"data:  x \n\n") == [(" x ", None, None, None)]  # one space stripped
    assert _events(b"data: a\ndata\ndata:b\n\n") == [("a\n\nb", None, None, None)]
    assert _events(b"data: a:b: c\n\n") == [("a:b: c", None, None, None)]
    assert _events(b"data: \n\n") == [("", None, None, None)]
    assert _events(b"data: \ndata: \n\n") == [("\n", None, None, None)]


def test_blocks_without_data_dispatch_nothing() -> None:
    assert _events(b"\n\n\r\n\r") == []
    assert _events(b"event: e\nid: 1\nretry: 5\n: c\n\n") == []
    # the type of a block without data does not leak into the next block
    assert _events(b"event: e\n\ndata: x\n\n") == [("x", None, None, None)]


def test_unknown_fields_and_case_are_ignored() -> None:
    raw = b"Data: no\nDATA: no\n data: no\nfoo: bar\nfoo\ndata : no\nevents: no\n\n"
    assert _events(raw) == []
    assert _events(raw + b"data: yes\n\n") == [("yes", None, None, None)]


def test_event_type_per_block() -> None:
    assert _events(b"event: a\ndata: 1\n\ndata: 2\n\nevent:b\nevent: c\ndata: 3\n\n") == [
        ("1", "a", None, None),
        ("2", None, None, None),  # the type resets after dispatch
        ("3", "c", None, None),  # the last event field wins
    ]
    assert _events(b"event:\ndata: x\n\n") == [("x", None, None, None)]  # "" = default
    assert _events(b"event:  \ndata: x\n\n") == [("x", " ", None, None)]


def test_id_persistence_and_last_event_id() -> None:
    d = SSEDecoder()
    out = d.feed(b"id: 1\ndata: a\n\ndata: b\n\n")
    assert _as_tuples(out) == [("a", None, "1", None), ("b", None, "1", None)]
    assert d.last_event_id == "1"
    assert _as_tuples(d.feed(b"id: 2\n\n")) == []  # no data: no event, but the id counts
    assert d.last_event_id == "2"
    assert _as_tuples(d.feed(b"data: c\n\n")) == [("c", None, "2", None)]
    assert _as_tuples(d.feed(b"id: x\0y\ndata: d\n\n")) == [("d", None, "2", None)]  # NUL
    assert _as_tuples(d.feed(b"id\ndata: e\n\n")) == [("e", None, "", None)]  # empty id
    assert d.last_event_id == ""
    # The last event ID string moves only when a blank line ends the block: a stream cut
    # inside an event must not make a reconnection skip that event.
    assert d.feed(b"id: 9\ndata: f\n") == []
    assert d.last_event_id == ""
    assert d.flush() == []
    assert d.last_event_id == ""
    # After flush the decoder takes the next stream (a reconnection): the id carries over.
    assert _as_tuples(d.feed(b"\xef\xbb\xbfdata: g\n\n")) == [("g", None, "", None)]


def test_retry_only_ascii_digits() -> None:
    def retry_of(value: bytes) -> int | None:
        (event,) = _events(b"retry:" + value + b"\ndata: x\n\n")
        return event[3]

    assert retry_of(b" 1500") == 1500
    assert retry_of(b"0") == 0
    assert retry_of(b"007") == 7
    assert retry_of(b"1500") == 1500
    for bad in [b"", b" ", b"  15", b"15 ", b"-1", b"+1", b"1.5", b"1e3", b"0x1", b"abc"]:
        assert retry_of(bad) is None, bad
    for bad_text in [
        "\u0661\u0662",
        "\u00b2",
        "\uff11\uff12",
    ]:  # Unicode digits are not ASCII digits
        assert retry_of(b" " + bad_text.encode()) is None, bad_text
    # Longer than int()'s digit limit: ignored, and no ValueError escapes feed().
    assert retry_of(b" " + b"9" * 5000) is None
    # An invalid value leaves an earlier valid one in the block; the next block starts over.
    assert _events(b"retry: 5\nretry: x\ndata: a\n\ndata: b\n\n") == [
        ("a", None, None, 5),
        ("b", None, None, None),
    ]


def test_comments_are_counted_not_dispatched() -> None:
    d = SSEDecoder()
    assert d.feed(b": ping\n\n:\n:: x\ndata: a\n: mid-event\n\n") != []
    assert d.comments == 4
    assert d.feed(b": unterminated") == []
    assert d.comments == 4
    d.flush()
    assert d.comments == 4  # the unterminated last line is discarded, not counted


def test_flush_drops_unterminated_event() -> None:
    d = SSEDecoder()
    assert _as_tuples(d.feed(b"data: a\n\ndata: b\n")) == [("a", None, None, None)]
    assert d.flush() == []
    assert d.feed(b"\n") == []  # the dropped event does not come back
    assert _events(b"data: a\n\ndata: b") == [("a", None, None, None)]
    assert _events(b"data: a\n\ndata: b\n") == [("a", None, None, None)]
    assert _events(b"data: a\n\ndata: b\r") == [("a", None, None, None)]


def test_iter_and_event_equality() -> None:
    chunks = [b"event: e\nid: 1\nretry: 3\ndata: a\n", b"\ndata: b\n\n"]
    assert list(SSEDecoder().iter(chunks)) == [
        ServerSentEvent("a", "e", "1", 3),
        ServerSentEvent("b", None, "1", None),
    ]
    assert ServerSentEvent("a") != ServerSentEvent("a", "e")
    assert ServerSentEvent("a") != "a"
    assert "data='a'" in repr(ServerSentEvent("a"))


def test_tricky_stream_every_split() -> None:
    """One stream with every kind of line end, multi-byte characters and a BOM, cut in two
    and in three at every pair of positions."""
    text = "\ufeffid: 😀\r\ndata: 中\r\rdata:é\n: c\r\nevent: é\rdata\r\n\r\ndata: 👩‍👧\n\n"
    raw = text.encode()
    expected = Model(text).events
    assert expected == [
        ("中", None, "😀", None),
        ("é\n", "é", "😀", None),
        ("👩‍👧", None, "😀", None),
    ]
    for i in range(len(raw) + 1):
        assert _events(raw[:i], raw[i:]) == expected, i
        for j in range(i, len(raw) + 1):
            assert _events(raw[:i], raw[i:j], raw[j:]) == expected, (i, j)


# ---------------------------------------------------------------------------------------
# Recorded upstream streams
# ---------------------------------------------------------------------------------------

FIXTURES = fixture_files()
_fixture = pytest.mark.parametrize(
    "path", FIXTURES, ids=[f"{p.parent.name}/{p.name}" for p in FIXTURES]
)

# Two-piece splits are checked inside a window of whole blocks reaching at least this far
# on each side of the cut; a file no longer than this is always decoded whole.
_WINDOW = 4096


def _read(path: Path) -> bytes:
    fixtures_dir()  # skips, or fails under CI=true, when ../shared is absent
    return path.read_bytes()


def _block_bounds(raw: bytes) -> list[int]:
    """Offsets just after each blank line (where no event is in progress), with 0 and
    len(raw); found with a regular expression, not with the decoder."""
    bounds = [0]
    line_start = 0
    for m in re.finditer(rb"\r\n|\r|\n", raw):
        if m.start() == line_start:
            bounds.append(m.end())
        line_start = m.end()
    if bounds[-1] != len(raw):
        bounds.append(len(raw))
    return bounds


def test_fixtures_present() -> None:
    fixtures_dir()  # skips, or fails under CI=true, when ../shared is absent
    assert FIXTURES, "no *.sse files in the recorded streams folder"


@_fixture
def test_fixture_every_two_piece_split(path: Path) -> None:
    """Cut at every byte offset, the file decodes to the same events as read whole.

    A file up to _WINDOW bytes is cut whole. In a longer one, each cut is made in a window
    of whole blocks (blank line to blank line) around the offset, at least _WINDOW bytes
    either side, so the cost stays linear. The windows are tied to the whole file first:
    cut in two at every block boundary, the file decodes as read whole, so the decoder
    starts each window as it would reach that point of the file (there are no ``id``
    fields in the fixtures, checked below, so a fresh decoder loses nothing)."""
    raw = _read(path)
    assert not re.search(rb"(^|[\r\n])id", raw)
    whole = _decode([raw])
    bounds = _block_bounds(raw)
    before = {}  # events that end before each block boundary
    for b in bounds:
        first = _decode([raw[:b]])
        assert first + _decode([raw[b:]]) == whole, b
        before[b] = len(first)
    windows: dict[tuple[int, int], list[Event]] = {}
    for k in range(len(raw) + 1):
        lo = bounds[bisect.bisect_right(bounds, max(k - _WINDOW, 0)) - 1]
        hi = bounds[bisect.bisect_left(bounds, min(k + _WINDOW, len(raw)))]
        expected = windows.get((lo, hi))
        if expected is None:
            expected = windows[lo, hi] = _decode([raw[lo:hi]])
            assert expected == whole[before[lo] : before[hi]], (lo, hi)
        assert _decode([raw[lo:k], raw[k:hi]]) == expected, k


@_fixture
def test_fixture_one_byte_at_a_time(path: Path) -> None:
    raw = _read(path)
    assert _decode(raw[i : i + 1] for i in range(len(raw))) == _decode([raw])


@_fixture
def test_fixture_events_match_data_blocks_and_payloads_are_json(path: Path) -> None:
    raw = _read(path)
    events = _decode([raw])
    text = raw.decode("utf-8")
    blocks = [b for b in re.split(r"(?:\r\n|\r|\n){2}", text) if b]
    data_blocks = [b for b in blocks if re.search(r"^data(?::|$)", b, re.MULTILINE)]
    assert len(events) == len(data_blocks) > 0
    assert events == Model(text).events
    for data, _event, _id, _retry in events:
        if data != "[DONE]":
            json.loads(data)


def test_encode_replaces_what_utf8_cannot_carry() -> None:
    """A str with a lone surrogate (e.g. from a JSON \\ud800 escape) is not valid UTF-8:
    it is sent with a replacement, never a crash mid-stream."""
    (event,) = SSEDecoder().iter([encode("a\ud800b")])
    assert event.data == "a?b"
