"""Markdown: a section per heading, with its heading path."""

from __future__ import annotations

import re
from pathlib import Path

from documents.parsing.base import Section
from documents.parsing.text import decode_text

MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
MD_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)")


def parse_markdown(text: str) -> list[Section]:
    """Sections per heading; a ``#`` inside a fenced code block is code, not a heading."""
    sections: list[Section] = []
    headings: list[tuple[int, str]] = []
    lines: list[str] = []
    fence: str | None = None

    def flush():
        if "".join(lines).strip():
            sections.append(Section(text="\n".join(lines), heading_path=tuple(t for _, t in headings)))
        lines.clear()

    for line in text.splitlines():
        fence_match = MD_FENCE.match(line)
        if fence_match:
            marker = fence_match.group(1)
            fence = marker if fence is None else (None if marker == fence else fence)
        heading = MD_HEADING.match(line) if fence is None and not fence_match else None
        if heading:
            flush()
            level = len(heading.group(1))
            headings[:] = [(lvl, t) for lvl, t in headings if lvl < level] + [(level, heading.group(2).strip())]
        else:
            lines.append(line)
    flush()
    return sections


def parse_path(path: Path, *, max_pages: int) -> list[Section]:
    return parse_markdown(decode_text(path.read_bytes()))
