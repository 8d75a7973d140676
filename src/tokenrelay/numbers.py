"""Numbers a client writes in a request (sequence numbers, ``?after=``, lengths)."""

from __future__ import annotations

MAX_DIGITS = 18  # any count or sequence number a client may send fits in 63 bits


def decimal(text: str | None) -> int | None:
    """``text`` as a non-negative integer when it is 1 to 18 ASCII digits, else None.
    (``str.isdigit`` also takes ``²`` and ``٣``, which ``int`` refuses or reads, and
    ``int`` refuses more than 4,300 digits: both were 500s.)"""
    if not text or len(text) > MAX_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    return int(text)
