"""The server's log lines (tokenrelay/logs.py): the same text as the standard formatter
gives, with the time formatted once per second."""

from __future__ import annotations

import logging

from hypothesis import given
from hypothesis import strategies as st

from tokenrelay.logs import FORMAT, Formatter

STANDARD = logging.Formatter(FORMAT)
OURS = Formatter()  # one instance for every example: its per-second cache is exercised


@given(created=st.floats(min_value=1e9, max_value=2e9), message=st.text(max_size=30))
def test_lines_are_those_of_the_standard_formatter(created: float, message: str) -> None:
    for when in (created, created + 0.0004, int(created) + 0.9995, int(created) + 1.0):
        record = logging.LogRecord("tokenrelay.access", logging.INFO, "x", 1, message, (), None)
        record.created, record.msecs = when, (when - int(when)) * 1000
        assert OURS.format(record) == STANDARD.format(record)
