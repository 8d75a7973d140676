"""What a worker of ``tokenrelay serve --workers N`` knows of itself (``workers.py``
starts them; ``app.py`` reads this, so the two do not import each other)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Worker:
    """What a worker knows of itself: its number (1..N, kept by a restarted worker) and
    the metrics directory shared by all."""

    index: int
    metrics_dir: str
