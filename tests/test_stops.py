"""``cut_at_stop``: where a piece-by-piece answer stops, property-tested."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tokenrelay.stops import cut_at_stop

ALPHABET = "ab \n界"  # few letters: sequences occur often, and overlap
pieces_st = st.lists(st.text(ALPHABET, max_size=6), max_size=12)
sequences_st = st.lists(st.text(ALPHABET, max_size=4), max_size=4)


@given(pieces_st, sequences_st)
def test_the_answer_ends_where_the_first_completed_sequence_begins(
    pieces: list[str], sequences: list[str]
) -> None:
    text = "".join(pieces)
    kept, matched = cut_at_stop(pieces, sequences)
    out = "".join(kept)
    if matched is None:
        assert kept == pieces
        assert not any(s and s in text for s in sequences)
        return
    assert matched in sequences and matched
    assert text.startswith(out + matched)  # the sequence itself is left out
    end = len(out) + len(matched)
    # no sequence was complete any earlier: generation would have stopped there
    assert not any(s and s in text[: end - 1] for s in sequences)


@given(pieces_st, sequences_st)
def test_pieces_are_kept_whole_but_the_last_one(pieces: list[str], sequences: list[str]) -> None:
    kept, _ = cut_at_stop(pieces, sequences)
    assert len(kept) <= len(pieces)
    assert kept[:-1] == pieces[: max(len(kept) - 1, 0)]
    if kept:
        assert pieces[len(kept) - 1].startswith(kept[-1])


def test_examples() -> None:
    words = ["one ", "two ", "STOP ", "three "]
    assert cut_at_stop(words, ["STOP"]) == (["one ", "two "], "STOP")
    assert cut_at_stop(words, ["wo S"]) == (["one ", "t"], "wo S")
    assert cut_at_stop(words, ["three", "two"]) == (["one "], "two")
    # "TO" is complete before "STOP" is: it wins, though "STOP" starts first
    assert cut_at_stop(words, ["STOP", "TO"]) == (["one ", "two ", "S"], "TO")
    assert cut_at_stop(words, ["", "nope"]) == (words, None)
    assert cut_at_stop([], ["x"]) == ([], None)
