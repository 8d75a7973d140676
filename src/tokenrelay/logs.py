"""The server's log output: ``asctime level logger message`` lines on stderr.

Every request ends with an access line, so a record's cost is paid once per request,
on the event loop: ~8 % of the gateway's CPU at concurrency 1 (py-spy) before this
module. Two things nobody prints are no longer looked up for each record (the thread,
the process, the caller's file and line: the ``logging`` documentation's own
optimisations), and the time is formatted once per second, not once per line.

A message carries values a client chose (a model name, a stream id, a path): every
control character in it (C0, DEL, C1, and the Unicode line and paragraph separators)
is written escaped, ``\\n`` for a newline, ``\\x00`` for NUL, so one record is always one
line and nobody can forge a line or hide one. A traceback after it is the one thing
written on several lines.
"""

from __future__ import annotations

import logging
import re
import time

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    )


def escape(text: str) -> str:
    """``text`` with every control character written as an escape (one line)."""
    return text if text.isprintable() else _CONTROL.sub(_escaped, text)


class Formatter(logging.Formatter):
    """``logging.Formatter`` with ``asctime`` formatted once per second."""

    def __init__(self, fmt: str = FORMAT) -> None:
        super().__init__(fmt)
        self._second = -1
        self._text = ""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._text = time.strftime(self.default_time_format, self.converter(second))
        return f"{self._text},{int(record.msecs):03d}"


def configure(level: str) -> None:
    """The server's logging: ``level`` and above, to stderr."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # the caller's file and line: not printed
    handler = logging.StreamHandler()
    handler.setFormatter(Formatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
