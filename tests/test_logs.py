"""The server's log lines (tokenrelay/logs.py): the same text as the standard formatter
gives, with the time formatted once per second and control characters escaped."""

from __future__ import annotations

import logging

from hypothesis import given
from hypothesis import strategies as st

from tokenrelay.logs import FORMAT, Formatter, escape

STANDARD = logging.Formatter(FORMAT)
OURS = Formatter()  # one instance for every example: its per-second cache is exercised


@given(created=st.floats(min_value=1e9, max_value=2e9), message=st.text(max_size=30))
def test_lines_are_those_of_the_standard_formatter(created: float, message: str) -> None:
    for when in (created, created + 0.0004, int(created) + 0.9995, int(created) + 1.0):
        record = logging.LogRecord("tokenrelay.access", logging.INFO, "x", 1, message, (), None)
        record.created, record.msecs = when, (when - int(when)) * 1000
        plain = logging.LogRecord("tokenrelay.access", logging.INFO, "x", 1, "", (), None)
        plain.msg, plain.created, plain.msecs = escape(message), record.created, record.msecs
        assert OURS.format(record) == STANDARD.format(plain)


CONTROL = st.characters(categories=["Cc", "Zl", "Zp"])


@given(value=st.text(alphabet=st.one_of(CONTROL, st.characters()), max_size=40))
def test_a_client_s_value_cannot_break_or_forge_a_line(value: str) -> None:
    record = logging.LogRecord("t", logging.INFO, "x", 1, "model=%s end", (value,), None)
    line = OURS.format(record)
    assert line.splitlines() == [line]  # one line, whatever the value held
    assert not any(c in line for c in "\x00\x7f\x85\u2028")
    assert line.endswith(" end")
    if "\n" in value:
        assert "\\n" in line


def test_escapes_are_readable() -> None:
    assert escape("a\nb\x00c\x1b[31m\u2028") == "a\\nb\\x00c\\x1b[31m\\u2028"
    assert escape("plain: 你好") == "plain: 你好"
