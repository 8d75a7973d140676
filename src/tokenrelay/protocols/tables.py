"""The one table of what translation drops or adjusts on purpose, per target protocol,
rendered from each codec's own table (the single source of truth; each protocol names
its table in its ``PROTOCOL``) as Markdown:
``python -m tokenrelay.protocols.tables > docs/translation.md``."""

from __future__ import annotations

from .registry import REGISTRY


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    lines = [
        "# What translation drops or adjusts, on purpose",
        "",
        "A request that reaches an upstream of the protocol it arrived in is forwarded as",
        "the client wrote it (only `model` and `stream` set). Between protocols, every",
        "field the target cannot express is dropped or adjusted as listed here, never by",
        "accident. Generated from the codecs' tables by",
        "`python -m tokenrelay.protocols.tables`; a test keeps this file in step.",
    ]
    for t in (p.translation for p in REGISTRY if p.translation is not None):
        title, where, rows = t.title, t.source, t.rows
        lines += [
            "",
            f"## {title}",
            "",
            f"Source: `{where}`.",
            "",
            "| field | what happens | why |",
            "|---|---|---|",
        ]
        lines += [f"| {_cell(f)} | {_cell(a)} | {_cell(w)} |" for f, a, w in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
