"""Turn an uploaded file into text sections: PDF (pages), DOCX, HTML, Markdown, plain text.

Parsers are well-kept libraries (PDFium through pypdfium2, with pypdf when PDFium cannot read a PDF;
python-docx, BeautifulSoup + lxml, charset-normalizer). What they say when they fail is kept as the
error's ``detail`` for the operators; the owner gets the sentence from documents/exceptions.py.
Hostile files exist (page trees that point at themselves, zip bombs, endless nesting), so the
worker never parses in its own process: ``parse_file_guarded`` runs the parser in a forked child
with a memory limit and kills it after a timeout. Whatever happens there, the worker lives and
the document gets a reason a person understands. (The one exception, decided in
``documents.pipeline.parse_document``: small plain-text files, whose decoding cannot hang or balloon.)
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import selectors
import signal
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from documents.exceptions import (
    CorruptDocument,
    DocumentTooLarge,
    EmptyDocument,
    EncryptedDocument,
    IngestError,
    NoExtractableText,
    ParsingTimeout,
    UnsupportedFileType,
)

logger = logging.getLogger(__name__)

KINDS = ("pdf", "docx", "html", "markdown", "text")
EXTENSIONS = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    ".csv": "text",
    ".log": "text",
}
CONTENT_TYPES = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
}
# A DOCX expands to at most this much XML; beyond it the zip is a bomb, not a document.
DOCX_MAX_UNCOMPRESSED = 512 * 1024 * 1024
# Control characters PostgreSQL text cannot hold (NUL) or that only confuse chunking.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Section:
    """A run of text with its place in the document: page (PDF) and heading path."""

    text: str
    page: int | None = None
    heading_path: tuple[str, ...] = ()


# Runs of this many characters without whitespace (base64, minified code) are broken up, so the
# splitter never falls back to cutting character by character (slow, and meaningless chunks).
LONGEST_WORD = 1000
LONG_RUN = re.compile(rf"(\S{{{LONGEST_WORD}}})(?=\S)")


def clean_text(text: str) -> str:
    text = CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = LONG_RUN.sub(r"\1 ", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# ---------------------------------------------------------------------------------------------
# What is it?

# How many first bytes decide (the upload check reads this much of the file, no more).
HEAD_BYTES = 8192
OFFICE_ADVICE = "save it as PDF (or as a Word .docx) and upload that copy"
OTHER_ADVICE = "upload the document as PDF, Word (.docx), HTML, Markdown or plain text"
# What people often try to upload, by name: (what it is, what to do instead).
REFUSED_EXTENSIONS: dict[str, tuple[str, str]] = {
    **dict.fromkeys((".doc", ".dot", ".docm", ".wps"), ("an older Word document (.doc)", OFFICE_ADVICE)),
    **dict.fromkeys((".xls", ".xlsx", ".xlsm", ".xlsb", ".ods", ".numbers"), ("a spreadsheet", OFFICE_ADVICE)),
    **dict.fromkeys((".ppt", ".pptx", ".pps", ".ppsx", ".odp", ".key"), ("a presentation", OFFICE_ADVICE)),
    **dict.fromkeys((".odt", ".rtf", ".pages", ".wpd", ".epub", ".mobi", ".xps", ".ps", ".eps", ".msg"),
                    ("a document format other than PDF or Word (.docx)", OFFICE_ADVICE)),
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".svg", ".ico"),
                    ("an image", "if it shows text, make it a PDF with text recognition (OCR) and upload that")),
    **dict.fromkeys((".zip", ".gz", ".tgz", ".tar", ".7z", ".rar", ".bz2", ".xz", ".zst"),
                    ("an archive", "unpack it and upload the documents inside")),
    **dict.fromkeys((".exe", ".dll", ".msi", ".dmg", ".apk", ".jar", ".so", ".bin", ".iso", ".class", ".pyc"),
                    ("a program or disk image, not a document", OTHER_ADVICE)),
    **dict.fromkeys((".mp3", ".wav", ".m4a", ".flac", ".ogg", ".mp4", ".mov", ".avi", ".mkv", ".webm"),
                    ("an audio or video recording", "upload a transcript of it as a text or Word document")),
    **dict.fromkeys((".sqlite", ".db", ".mdb", ".accdb"), ("a database file", OTHER_ADVICE)),
    "office": ("an older Microsoft Office file (.doc, .xls or .ppt)", OFFICE_ADVICE),  # by content only
}
# The same by content (magic bytes), for files whose name says nothing or lies.
MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "office"),  # OLE2: .doc, .xls, .ppt, .msg
    (b"{\\rtf", ".rtf"),
    (b"%!PS", ".ps"),
    (b"\x89PNG", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"), (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"), (b"BM", ".bmp"),
    (b"\x1f\x8b", ".gz"), (b"7z\xbc\xaf\x27\x1c", ".7z"), (b"Rar!\x1a\x07", ".rar"), (b"BZh", ".bz2"),
    (b"\xfd7zXZ\x00", ".xz"), (b"\x28\xb5\x2f\xfd", ".zst"),
    (b"\x7fELF", ".exe"), (b"MZ", ".exe"), (b"\xcf\xfa\xed\xfe", ".exe"), (b"\xce\xfa\xed\xfe", ".exe"),
    (b"\xca\xfe\xba\xbe", ".exe"), (b"\x00asm", ".exe"),
    (b"ID3", ".mp3"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"\x1aE\xdf\xa3", ".mkv"),
    (b"SQLite format 3\x00", ".sqlite"),
)


def _refuse(extension: str) -> UnsupportedFileType:
    what, advice = REFUSED_EXTENSIONS[extension]
    return UnsupportedFileType(UnsupportedFileType.KIND.format(what=what, advice=advice))


def check_supported(*, name: str, head: bytes) -> None:
    """Refuse a file no parser here reads, from its name and first bytes (``HEAD_BYTES``).

    Called on upload (``documents.services.check_upload``: refused at once, with the list of what is
    supported) and again before parsing. Content decides before the name: a PDF named .txt is read
    as a PDF, an executable named .pdf is refused. An empty file passes (it fails as empty).
    """
    extension = Path(name or "").suffix.lower()
    if not head or b"%PDF-" in head[:1024]:
        return
    if head.startswith(b"PK\x03\x04"):  # a zip: a .docx, or an Office / OpenDocument / plain archive
        if extension == ".docx" or b"word/" in head:
            return  # the parser opens the archive and says if it is no Word document
        if b"xl/" in head:
            raise _refuse(".xlsx")
        if b"ppt/" in head:
            raise _refuse(".pptx")
        if b"opendocument" in head or b"epub" in head:
            raise _refuse(".odt")
        raise _refuse(extension if extension in REFUSED_EXTENSIONS else ".zip")
    if head[4:8] == b"ftyp":  # ISO media: MP4 / QuickTime video, or a HEIC photo
        raise _refuse(".heic" if head[8:12] in (b"heic", b"heix", b"mif1") else ".mp4")
    if head.startswith(b"RIFF") and head[8:12] in (b"WAVE", b"AVI ", b"WEBP"):
        raise _refuse(".webp" if head[8:12] == b"WEBP" else ".wav")
    for magic, like in MAGIC:
        # Magic made of letters ("MZ", "BM", "ID3") also starts plain words: those need binary bytes too.
        if head.startswith(magic) and (not magic.isalnum() or not _is_text(head)):
            if like == "office" and extension in (".docx", ".docm", ".xlsx", ".xlsm", ".pptx"):
                # A password-protected .docx (.xlsx, .pptx) is stored encrypted inside this older container.
                raise UnsupportedFileType(UnsupportedFileType.PROTECTED)
            # The content says what it is; the name may only say which Office file.
            office = like == "office" and REFUSED_EXTENSIONS.get(extension, ("", ""))[1] == OFFICE_ADVICE
            raise _refuse(extension if office else like)
    if extension in (".pdf", ".docx"):  # the name promises a binary format the bytes do not have
        what = "a PDF" if extension == ".pdf" else "a Word document"
        raise UnsupportedFileType(UnsupportedFileType.MISNAMED.format(extension=extension[1:], what=what))
    if extension in REFUSED_EXTENSIONS:
        raise _refuse(extension)
    if _looks_binary(head):
        raise UnsupportedFileType()


def check_supported_upload(file) -> None:
    """``check_supported`` for an upload (a Django ``File``), which is left at its start."""
    file.seek(0)
    head = file.read(HEAD_BYTES)
    file.seek(0)
    check_supported(name=getattr(file, "name", None) or "", head=head.encode() if isinstance(head, str) else head)


def detect_kind(path: Path, filename: str = "", content_type: str = "") -> str:
    """The parser for a file, from its first bytes, then its name, then its declared type."""
    with open(path, "rb") as handle:
        head = handle.read(HEAD_BYTES)
    if not head:
        raise EmptyDocument()
    check_supported(name=filename or path.name, head=head)
    extension = EXTENSIONS.get(Path(filename or path.name).suffix.lower())
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        if extension == "docx" or _is_docx(path):
            return "docx"
        raise _refuse(".zip")
    if extension:
        return extension
    declared = CONTENT_TYPES.get((content_type or "").split(";")[0].strip().lower())
    if declared in ("html", "markdown", "text"):
        return declared
    lowered = head[:512].lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "html"
    return "text"


def _is_docx(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return "word/document.xml" in archive.namelist()
    except zipfile.BadZipFile:
        return False


def _is_text(head: bytes) -> bool:
    """No NUL bytes and valid UTF-8 (but for a character cut at the end)."""
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:
            return False
    return b"\x00" not in head


def _looks_binary(head: bytes) -> bool:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False  # UTF-16 text has NUL bytes by design
    return b"\x00" in head


# ---------------------------------------------------------------------------------------------
# Parsers (run in the guarded child process)


def parse_file(
    path: Path, kind: str, *, max_pages: int = 5000, max_characters: int = 10_000_000
) -> list[Section]:
    """Sections of a file of a known kind; raises an ``IngestError`` with the reason."""
    if kind == "pdf":
        sections = parse_pdf(path, max_pages=max_pages)
    elif kind == "docx":
        sections = parse_docx(path)
    elif kind == "html":
        sections = parse_html(decode_text(path.read_bytes()))
    elif kind == "markdown":
        sections = parse_markdown(decode_text(path.read_bytes()))
    elif kind == "text":
        sections = [Section(text=decode_text(path.read_bytes()))]
    else:
        raise UnsupportedFileType()
    sections = [Section(clean_text(s.text), s.page, s.heading_path) for s in sections]
    sections = [s for s in sections if s.text]
    characters = sum(len(s.text) for s in sections)
    if characters > max_characters:
        raise DocumentTooLarge(DocumentTooLarge.CHARACTERS.format(count=characters, limit=max_characters),
                               detail=f"PARSE_MAX_CHARACTERS={max_characters}")
    if not sections:
        if kind == "pdf":
            raise NoExtractableText() if pdf_has_images(path) else NoExtractableText(NoExtractableText.BLANK)
        raise EmptyDocument(EmptyDocument.NO_TEXT)
    return sections


@dataclass(frozen=True)
class PdfText:
    """What one reader got out of a PDF: each page's text ("" where none) and the pages it failed on."""

    pages: list[str]
    failed: list[str]  # the reader's words for each page it could not read


def read_pdf_pypdf(path: Path, *, max_pages: int) -> PdfText:
    """Each page's text as pypdf reads it (pure Python: slower, but no native code)."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted:
            # Many PDFs are "encrypted" with an empty user password only to set permissions.
            try:
                if not reader.decrypt(""):
                    raise EncryptedDocument(detail="pypdf: the empty user password does not open it")
            except (FileNotDecryptedError, DependencyError, NotImplementedError) as error:
                raise EncryptedDocument(detail=f"pypdf: {_short(error)}") from error
        count = len(reader.pages)
    except IngestError:
        raise
    except DependencyError as error:  # a cipher pypdf cannot run here: say it, the fallback may read it
        raise EncryptedDocument(detail=f"pypdf: {_short(error)}") from error
    except (RecursionError, PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as error:
        raise CorruptDocument(CorruptDocument.PDF, detail=f"pypdf: {_short(error)}") from error
    _check_page_count(count, max_pages)
    pages, failed = [], []
    for number, page in enumerate(reader.pages, start=1):
        try:
            pages.append(page.extract_text() or "")
        except Exception as error:  # one damaged page must not cost the others
            pages.append("")
            failed.append(f"page {number}: {_short(error)}")
    return PdfText(pages, failed)


def read_pdf_pdfium(path: Path, *, max_pages: int) -> PdfText:
    """Each page's text as PDFium (Chrome's PDF engine, through pypdfium2) reads it."""
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as error:
        if getattr(error, "err_code", None) == pdfium.raw.FPDF_ERR_PASSWORD:
            raise EncryptedDocument(detail=f"pdfium: {_short(error)}") from error
        raise CorruptDocument(CorruptDocument.PDF, detail=f"pdfium: {_short(error)}") from error
    try:
        count = len(document)
        _check_page_count(count, max_pages)
        pages, failed = [], []
        for index in range(count):
            try:
                page = document[index]
                textpage = page.get_textpage()
                pages.append(textpage.get_text_bounded())
                textpage.close()
                page.close()
            except pdfium.PdfiumError as error:
                pages.append("")
                failed.append(f"page {index + 1}: {_short(error)}")
        return PdfText(pages, failed)
    finally:
        document.close()


def pdf_has_images(path: Path) -> bool:
    """Whether any page of a PDF draws a picture: a PDF without text is then a scan, not blank."""
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError:
        return True  # unreadable here: the usual reason for a PDF without text is a scan
    try:
        for index in range(len(document)):
            page = document[index]
            if any(True for _ in page.get_objects(filter=(pdfium.raw.FPDF_PAGEOBJ_IMAGE,))):
                return True
        return False
    finally:
        document.close()


def _check_page_count(count: int, max_pages: int) -> None:
    if count == 0:
        raise CorruptDocument(CorruptDocument.PDF, detail="the PDF has no pages")
    if count > max_pages:
        raise DocumentTooLarge(DocumentTooLarge.PAGES.format(count=count, limit=max_pages),
                               detail=f"PARSE_MAX_PAGES={max_pages}")


# The first reader that reads a PDF wins; a PDF is reported damaged only when every reader fails
# (bench/pdf_parsers.py: PDFium reads more of the damaged files and is several times faster).
PDF_READERS = (read_pdf_pdfium, read_pdf_pypdf)


def parse_pdf(path: Path, *, max_pages: int) -> list[Section]:
    failures: list[IngestError] = []
    for reader in PDF_READERS:
        try:
            text = reader(path, max_pages=max_pages)
        except DocumentTooLarge:
            raise
        except (EncryptedDocument, CorruptDocument) as error:
            failures.append(error)
            continue
        except RecursionError as error:  # a page tree that refers to itself
            failures.append(CorruptDocument(CorruptDocument.PDF, detail=f"{reader.__name__}: {error!r}"))
            continue
        if text.failed and not any(page.strip() for page in text.pages):
            failures.append(CorruptDocument(CorruptDocument.PDF, detail=f"{reader.__name__}: {text.failed[0]}"))
            continue
        if text.failed:
            logger.warning("%s: %s could not read %d pages (%s)", path.name, reader.__name__, len(text.failed),
                           "; ".join(text.failed[:3]))
        if failures:
            logger.warning("%s: read by %s after: %s", path.name, reader.__name__,
                           "; ".join(f.detail for f in failures))
        return [Section(text=page, page=number) for number, page in enumerate(text.pages, start=1) if page.strip()]
    detail = "; ".join(f.detail for f in failures)
    # A password stops every reader alike; a reader that could not open it for another reason does not count.
    if any(isinstance(f, EncryptedDocument) for f in failures):
        raise EncryptedDocument(detail=detail)
    raise CorruptDocument(CorruptDocument.PDF, detail=detail)


def parse_docx(path: Path) -> list[Section]:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        with zipfile.ZipFile(path) as archive:
            expanded = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile as error:
        raise CorruptDocument(CorruptDocument.DOCX, detail=f"not a zip archive: {_short(error)}") from error
    if expanded > DOCX_MAX_UNCOMPRESSED:
        raise DocumentTooLarge(DocumentTooLarge.EXPANDS.format(megabytes=expanded // 2**20),
                               detail=f"{expanded:,} bytes uncompressed; the guard is {DOCX_MAX_UNCOMPRESSED:,}")
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
            cells = []
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


HTML_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
HTML_NOISE = ("script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form",
              "iframe", "svg", "canvas", "button", "select", "head", "title", "meta", "link")
HTML_NOISE_SELECTORS = ('[role="navigation"]', '[role="banner"]', '[role="contentinfo"]',
                        '[aria-hidden="true"]', ".navbox", ".mw-jump-link", ".mw-editsection",
                        "#mw-navigation", "#mw-panel", "#footer", ".catlinks", ".printfooter", "#toc", ".toc")
HTML_BLOCKS = frozenset(("p", "div", "li", "ul", "ol", "pre", "blockquote", "table", "tr", "section",
                         "article", "main", "dd", "dt", "dl", "br", "figure", "figcaption", "hr") + HTML_HEADINGS)


def parse_html(html: str) -> list[Section]:
    """Main text without scripts, styles and navigation; headings become the heading path."""
    from bs4 import BeautifulSoup, Comment, Doctype, NavigableString, Tag

    soup = BeautifulSoup(html, "lxml")
    for tag in soup.find_all(HTML_NOISE):
        tag.decompose()
    for selector in HTML_NOISE_SELECTORS:
        for tag in soup.select(selector):
            tag.decompose()
    root = (
        soup.find("main") or soup.find(attrs={"role": "main"}) or soup.find("article")
        or soup.find(id="content") or soup.body or soup
    )
    sections: list[Section] = []
    headings: list[tuple[int, str]] = []
    parts: list[str] = []

    def flush():
        text = "".join(parts)
        if text.strip():
            sections.append(Section(text=text, heading_path=tuple(t for _, t in headings)))
        parts.clear()

    skip_inside = None  # the heading whose strings were already taken as its title
    for node in root.descendants:  # an iterative walk: deep nesting cannot overflow the stack
        if isinstance(node, Tag):
            if node.name in HTML_HEADINGS:
                title = " ".join(node.get_text(" ").split())
                if title:
                    flush()
                    level = int(node.name[1])
                    headings[:] = [(lvl, t) for lvl, t in headings if lvl < level] + [(level, title)]
                skip_inside = node
            elif node.name in HTML_BLOCKS:
                parts.append("\n\n" if node.name in ("p", "div", "pre", "table", "blockquote") else "\n")
            elif node.name in ("td", "th"):
                parts.append(" | ")
        elif isinstance(node, NavigableString) and not isinstance(node, Comment | Doctype):
            if skip_inside is not None and skip_inside in node.parents:
                continue
            parts.append(re.sub(r"[ \t\r\f\v]+", " ", str(node)) if node.parent.name != "pre" else str(node))
    flush()
    return [Section(text=_tidy_html_text(s.text), heading_path=s.heading_path) for s in sections]


def _tidy_html_text(text: str) -> str:
    lines = []
    for line in text.split("\n"):
        line = line.strip().strip("|").strip()
        if line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines)


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


def decode_text(data: bytes) -> str:
    """Bytes to text: BOMs, then UTF-8, then charset-normalizer's guess (Latin-1, CP-1252 …)."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    sample = data[: 1024 * 1024]  # a sample tells the encoding and keeps huge files fast
    # Western text in CP-1252 (a superset of Latin-1) has mostly ASCII letters and a few accented
    # ones; other legacy encodings read as CP-1252 turn nearly every letter into an accented one.
    western = sample.decode("cp1252", errors="replace")
    letters = [ch for ch in western if ch.isalpha()]
    accented = sum(1 for ch in letters if ord(ch) > 127)
    if letters and accented / len(letters) < 0.3 and western.count("\ufffd") <= len(western) // 1000:
        return data.decode("cp1252", errors="replace")
    from charset_normalizer import from_bytes

    best = from_bytes(sample).best()
    return data.decode(best.encoding if best is not None else "cp1252", errors="replace")


def _short(error: BaseException) -> str:
    """An exception in a few words, for ``detail`` (the operators' side), never for the owner's message."""
    message = str(error).strip() or error.__class__.__name__
    return message[:300]


# ---------------------------------------------------------------------------------------------
# The guard: a child process with a memory limit and a timeout


def parse_file_guarded(
    *, path: Path, filename: str = "", content_type: str = "",
    timeout: float | None = None, max_memory_mb: int | None = None, max_pages: int | None = None,
) -> list[Section]:
    """Parse in a child process that is killed after ``timeout`` seconds or at its memory limit."""
    from django.conf import settings

    timeout = timeout if timeout is not None else settings.PARSE_TIMEOUT_SECONDS
    max_memory_mb = max_memory_mb if max_memory_mb is not None else settings.PARSE_MAX_MEMORY_MB
    max_pages = max_pages if max_pages is not None else settings.PARSE_MAX_PAGES
    max_characters = settings.PARSE_MAX_CHARACTERS
    kind = detect_kind(path, filename, content_type)
    if not hasattr(os, "fork"):  # not POSIX: parse in-process, unguarded
        return parse_file(path, kind, max_pages=max_pages, max_characters=max_characters)

    # A bare fork, not multiprocessing: the child starts in a millisecond with the parsers
    # imported, and runs none of the after-fork hooks libraries register with multiprocessing
    # (kombu's would close the parent's broker connections from the child).
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: parse, send the outcome, and leave without any cleanup
        os.close(read_end)
        try:
            outcome = _parse_in_child(path, kind, max_pages, max_characters, max_memory_mb)
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(outcome, pipe, protocol=pickle.HIGHEST_PROTOCOL)
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        data = _read_until_eof(read_end, timeout)
    finally:
        os.close(read_end)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    if data is None:
        raise ParsingTimeout(detail=f"stopped after PARSE_TIMEOUT_SECONDS={timeout:g}")
    if not data:
        raise DocumentTooLarge(DocumentTooLarge.MEMORY, detail=(
            f"the parser process ended without an answer: it passed PARSE_MAX_MEMORY_MB={max_memory_mb} "
            "or crashed"))
    status, payload = pickle.loads(data)
    if status == "ok":
        return [Section(text, page, tuple(heading)) for text, page, heading in payload]
    message, detail = payload
    raise ERRORS.get(status, CorruptDocument)(message, detail=detail)


ERRORS = {cls.__name__: cls for cls in (CorruptDocument, DocumentTooLarge, EmptyDocument, EncryptedDocument,
                                        NoExtractableText, UnsupportedFileType, ParsingTimeout, IngestError)}


def _read_until_eof(fd: int, timeout: float) -> bytes | None:
    """Everything written to ``fd`` until the writer closes it; None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    parts = []
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                return None
            block = os.read(fd, 1 << 20)
            if not block:
                return b"".join(parts)
            parts.append(block)


def _parse_in_child(
    path: Path, kind: str, max_pages: int, max_characters: int, max_memory_mb: int
) -> tuple[str, object]:
    try:
        _limit_memory(max_memory_mb)
        sections = parse_file(path, kind, max_pages=max_pages, max_characters=max_characters)
        return "ok", [(s.text, s.page, list(s.heading_path)) for s in sections]
    except IngestError as error:
        return error.__class__.__name__, (str(error), error.detail)
    except MemoryError:
        return "DocumentTooLarge", (DocumentTooLarge.MEMORY, f"MemoryError at PARSE_MAX_MEMORY_MB={max_memory_mb}")
    except RecursionError as error:
        return "CorruptDocument", (CorruptDocument.STRUCTURE, f"RecursionError: {_short(error)}")
    except Exception as error:  # the reason travels to the parent, which marks the document
        return "CorruptDocument", (CorruptDocument.default_message, f"{error.__class__.__name__}: {_short(error)}")


def _limit_memory(max_memory_mb: int) -> None:
    """Cap the child's address space at what it inherited plus ``max_memory_mb``."""
    try:
        import resource

        with open("/proc/self/statm") as statm:
            inherited = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = inherited + max_memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, OSError, ValueError):
        logger.warning("cannot limit the parser's memory on this system")
