"""Numbers a client writes (tokenrelay/numbers.py): ASCII digits only, never a crash."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tokenrelay.numbers import MAX_DIGITS, decimal


@given(st.text(max_size=30) | st.text(alphabet="0123456789²٣", min_size=1, max_size=5000))
def test_decimal_takes_only_short_ascii_digit_strings(text: str) -> None:
    value = decimal(text)
    if value is None:
        assert not (0 < len(text) <= MAX_DIGITS and all("0" <= c <= "9" for c in text))
    else:
        assert value == int(text) and 0 <= value < 2**63


def test_examples() -> None:
    assert decimal("42") == 42
    assert decimal("²") is None and decimal("٣") is None and decimal("") is None
    assert decimal("9" * 5000) is None and decimal("-1") is None and decimal(" 1") is None
