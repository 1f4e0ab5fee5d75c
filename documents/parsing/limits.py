"""Size limits the parsers apply while they read: pages, extracted characters, a zip's expansion.

(The time and memory limits are the guard's: ``guard.parse_file_guarded``.)
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from documents.exceptions import CorruptDocument, DocumentTooLarge
from documents.parsing.base import _short

# A DOCX expands to at most this much XML; beyond it the zip is a bomb, not a document.
DOCX_MAX_UNCOMPRESSED = 512 * 1024 * 1024



def check_zip_expansion(path: Path, *, damaged: str) -> None:
    """Refuse a zip (a .docx) that would expand past ``DOCX_MAX_UNCOMPRESSED``: a bomb, not a document."""
    try:
        with zipfile.ZipFile(path) as archive:
            expanded = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile as error:
        raise CorruptDocument(damaged, detail=f"not a zip archive: {_short(error)}") from error
    if expanded > DOCX_MAX_UNCOMPRESSED:
        raise DocumentTooLarge(DocumentTooLarge.EXPANDS.format(megabytes=expanded // 2**20),
                               detail=f"{expanded:,} bytes uncompressed; the guard is {DOCX_MAX_UNCOMPRESSED:,}")


def check_page_count(count: int, max_pages: int) -> None:
    if count == 0:
        raise CorruptDocument(CorruptDocument.PDF, detail="the PDF has no pages")
    if count > max_pages:
        raise DocumentTooLarge(DocumentTooLarge.PAGES.format(count=count, limit=max_pages),
                               detail=f"PARSE_MAX_PAGES={max_pages}")


def check_characters(characters: int, max_characters: int) -> None:
    if characters > max_characters:
        raise DocumentTooLarge(DocumentTooLarge.CHARACTERS.format(count=characters, limit=max_characters),
                               detail=f"PARSE_MAX_CHARACTERS={max_characters}")
