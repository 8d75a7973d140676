"""The one table of what translation drops or adjusts on purpose, per target protocol,
rendered from each codec's own table (the single source of truth) as Markdown:
``python -m tokenrelay.protocols.tables > docs/translation.md``."""

from __future__ import annotations

from collections.abc import Iterable

from . import anthropic, gemini, openai, responses

SOURCES: tuple[tuple[str, str, Iterable[tuple[str, str, str]]], ...] = (
    ("OpenAI-compatible upstream", "protocols/openai_translate.py DROPPED", openai.DROPPED),
    ("Anthropic upstream", "protocols/anthropic_translate.py ADJUSTMENTS", anthropic.ADJUSTMENTS),
    ("Gemini upstream", "protocols/gemini.py DROPPED", gemini.DROPPED),
    (
        "OpenAI Responses (client and upstream)",
        "protocols/responses/translate.py DROPPED",
        responses.DROPPED,
    ),
)


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
    for title, where, rows in SOURCES:
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
