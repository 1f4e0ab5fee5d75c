"""Which parser reads which kind of file (``PARSERS``), and ``parse_file``, which every parse goes through."""

from __future__ import annotations

from pathlib import Path

from documents.exceptions import EmptyDocument, NoExtractableText, UnsupportedFileType
from documents.parsing import docx, html, markdown, pdf, text
from documents.parsing.base import Parser, Section, clean_text
from documents.parsing.limits import check_characters

# One entry per kind ``detect.detect_kind`` answers (``detect.KINDS``).
PARSERS: dict[str, Parser] = {
    "pdf": pdf.parse_path,
    "docx": docx.parse_path,
    "html": html.parse_path,
    "markdown": markdown.parse_path,
    "text": text.parse_path,
}


def parse_file(
    path: Path, kind: str, *, max_pages: int = 5000, max_characters: int = 10_000_000
) -> list[Section]:
    """Sections of a file of a known kind; raises an ``IngestError`` with the reason."""
    parser = PARSERS.get(kind)
    if parser is None:
        raise UnsupportedFileType()
    sections = parser(path, max_pages=max_pages)
    sections = [Section(clean_text(s.text), s.page, s.heading_path) for s in sections]
    sections = [s for s in sections if s.text]
    check_characters(sum(len(s.text) for s in sections), max_characters)
    if not sections:
        if kind == "pdf":
            raise NoExtractableText() if pdf.pdf_has_images(path) else NoExtractableText(NoExtractableText.BLANK)
        raise EmptyDocument(EmptyDocument.NO_TEXT)
    return sections
