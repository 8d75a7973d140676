"""docs/translation.md is the codecs' drop tables, rendered: it never drifts from them."""

from __future__ import annotations

from support.paths import ROOT

from tokenrelay.protocols.tables import render


def test_the_documented_table_is_the_codecs_tables() -> None:
    assert (ROOT / "docs" / "translation.md").read_text() == render(), (
        "run: python -m tokenrelay.protocols.tables > docs/translation.md"
    )
