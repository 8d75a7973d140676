"""The limit fields a key carries, defined once.

``LIMIT_FIELDS`` is the one list of a key's limits: the store's current columns, the
admin API's request and response schemas, the key checks and the CLI's flags are all
derived from it. A new limit kind is one entry here, one field on ``Limits`` (what the
limiters read), one migration, the limiter's check, and the dashboard's form field.
``budget_period`` is not a limit of its own but the span of ``budget_usd``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

from msgspec import Meta

MAX_COUNT = 2**31 - 1
MAX_BUDGET = 1e12


@dataclass(frozen=True, slots=True)
class LimitField:
    """One limit: ``None`` (or omitted) means unlimited.

    ``whole`` limits are counts from 1 to ``MAX_COUNT``; the others are USD amounts from
    0 to ``MAX_BUDGET``. ``wide`` counts get a 64-bit column. ``flag`` and ``help`` are
    the CLI's ``keys create`` option."""

    name: str
    whole: bool
    flag: str
    help: str
    column: str
    wide: bool = False

    @property
    def kind(self) -> type[int] | type[float]:
        return int if self.whole else float

    @property
    def constrained(self) -> Any:
        """The type the admin API decodes, its bounds published in its JSON Schema."""
        if self.whole:
            return Annotated[int, Meta(ge=1, le=MAX_COUNT)] | None
        return Annotated[float, Meta(ge=0, le=MAX_BUDGET)] | None

    @property
    def plain(self) -> Any:
        """The type the admin API encodes."""
        return self.kind | None

    def problem(self, value: float | None) -> str | None:
        """Why ``value`` is not a valid setting (``None`` when it is): ``name: …``."""
        if value is None:
            return None
        if self.whole:
            if isinstance(value, bool) or value < 1 or value > MAX_COUNT:
                return f"{self.name}: must be a whole number from 1 to {MAX_COUNT}"
            return None
        if not (math.isfinite(value) and 0 <= value <= MAX_BUDGET):
            return f"{self.name}: must be a number from 0 to 1e12"
        return None


LIMIT_FIELDS: tuple[LimitField, ...] = (
    LimitField("rpm", True, "--rpm", "requests per minute", "RPM"),
    LimitField("tpm", True, "--tpm", "tokens per minute", "TPM", wide=True),
    LimitField("max_concurrent", True, "--max-concurrent", "concurrent requests", "CONC"),
    LimitField("budget_usd", False, "--budget", "spend budget in USD per period", "BUDGET"),
)
"""Every limit, in the order of the store's columns and the API's fields."""

LIMIT_NAMES: tuple[str, ...] = tuple(f.name for f in LIMIT_FIELDS)
COUNT_NAMES: tuple[str, ...] = tuple(f.name for f in LIMIT_FIELDS if f.whole)
