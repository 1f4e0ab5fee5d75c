"""Word (.docx): paragraphs under their heading path, tables as "cell | cell" lines."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from documents.exceptions import CorruptDocument
from documents.parsing.base import Section, _short
from documents.parsing.limits import check_zip_expansion

logger = logging.getLogger(__name__)


def parse_docx(path: Path) -> list[Section]:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    check_zip_expansion(path, damaged=CorruptDocument.DOCX)
    try:
        document = docx.Document(str(path))
    except MemoryError:
        raise  # inflating the parts hit the memory limit: the guard says so (PARSE_MAX_MEMORY_MB)
    except Exception as error:
        from lxml import etree

        if isinstance(error, etree.XMLSyntaxError) and error.code == etree.ErrorTypes.ERR_NO_MEMORY:
            raise MemoryError() from error  # libxml2 ran out of memory: the same limit, not a damaged file
        raise CorruptDocument(CorruptDocument.DOCX, detail=f"python-docx: {_short(error)}") from error

    sections: list[Section] = []
    headings: list[tuple[int, str]] = []
    lines: list[str] = []

    def flush():
        if lines:
            sections.append(Section(text="\n\n".join(lines), heading_path=tuple(t for _, t in headings)))
            lines.clear()

    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            text = block.text.strip()
            if not text:
                continue
            level = _docx_heading_level(block)
            if level:
                flush()
                headings[:] = [(lvl, t) for lvl, t in headings if lvl < level] + [(level, text)]
            else:
                lines.append(text)
        elif isinstance(block, Table):
            rows = _docx_table_rows(block, path)
            if any(r.strip(" |") for r in rows):
                lines.append("\n".join(rows))
    flush()
    return sections


def _docx_table_rows(table, path: Path) -> list[str]:
    """A table's rows as "cell | cell" lines; from its raw cells when its grid is malformed.

    python-docx lays cells out on the table's grid and gives up on a row whose cells do not fit it
    ("no `tc` element at grid_offset=1"); Word shows such a table anyway, so its text is read cell
    by cell, in document order, without the grid.
    """
    from docx.oxml.ns import qn

    try:
        rows = []
        for row in table.rows:
            cells: list[str] = []
            for cell in row.cells:
                value = " ".join(cell.text.split())
                if not cells or cells[-1] != value:  # merged cells repeat their text
                    cells.append(value)
            rows.append(" | ".join(cells))
        return rows
    except Exception as error:  # the grid, not the text, is damaged
        logger.warning("%s: a table's grid is malformed (%s); reading its cells without it", path.name, _short(error))
    rows = []
    for tr in table._tbl.iter(qn("w:tr")):
        cells = [" ".join("".join(t.text or "" for t in tc.iter(qn("w:t"))).split()) for tc in tr.iter(qn("w:tc"))]
        rows.append(" | ".join(cells))
    return rows


def _docx_heading_level(paragraph) -> int:
    name = (paragraph.style.name if paragraph.style is not None else "") or ""
    if name == "Title":
        return 1
    match = re.match(r"Heading (\d)", name)
    return int(match.group(1)) if match else 0


def parse_path(path: Path, *, max_pages: int) -> list[Section]:
    return parse_docx(path)
