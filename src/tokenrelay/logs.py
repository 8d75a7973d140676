"""The server's log output: ``asctime level logger message`` lines on stderr.

Every request ends with an access line, so a record's cost is paid once per request,
on the event loop: ~8 % of the gateway's CPU at concurrency 1 (py-spy) before this
module. Two things nobody prints are no longer looked up for each record (the thread,
the process, the caller's file and line: the ``logging`` documentation's own
optimisations), and the time is formatted once per second, not once per line.
"""

from __future__ import annotations

import logging
import time

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class Formatter(logging.Formatter):
    """``logging.Formatter`` with ``asctime`` formatted once per second."""

    def __init__(self, fmt: str = FORMAT) -> None:
        super().__init__(fmt)
        self._second = -1
        self._text = ""

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
