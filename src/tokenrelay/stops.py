"""Stop sequences: where an answer that is generated piece by piece stops.

A model stops as soon as what it generated contains one of the request's stop
sequences, so the one that wins is the one whose first occurrence *ends* first; the
answer is everything before that occurrence, and the sequence itself is not part of it
(the OpenAI, Anthropic and Gemini APIs all leave it out). Used by the ``local`` models
and by the fake upstream, which both answer like a real model would. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["cut_at_stop"]


def cut_at_stop(pieces: Sequence[str], sequences: Sequence[str]) -> tuple[list[str], str | None]:
    """``pieces`` up to the first stop sequence (the piece it starts in cut short), and
    the sequence that stopped them (``None``, and the pieces unchanged, if none did).
    Empty sequences never match; of two that end at the same place, the first listed wins."""
    text = "".join(pieces)
    best: tuple[int, int, str] | None = None  # (end, start, sequence) of the winner
    for sequence in sequences:
        start = text.find(sequence) if sequence else -1
        if start >= 0 and (best is None or start + len(sequence) < best[0]):
            best = (start + len(sequence), start, sequence)
    if best is None:
        return list(pieces), None
    _, start, sequence = best
    kept: list[str] = []
    seen = 0
    for piece in pieces:
        if seen + len(piece) > start:
            if start > seen:
                kept.append(piece[: start - seen])
            break
        kept.append(piece)
        seen += len(piece)
    return kept, sequence
