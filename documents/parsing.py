"""Turn an uploaded file into text sections: PDF (pages), DOCX, HTML, Markdown, plain text.

Parsers are well-kept libraries (pypdf, python-docx, BeautifulSoup + lxml, charset-normalizer).
Hostile files exist (page trees that point at themselves, zip bombs, endless nesting), so the
worker never parses in its own process: ``parse_file_guarded`` runs the parser in a forked child
with a memory limit and kills it after a timeout. Whatever happens there, the worker lives and
the document gets a reason a person understands. (The one exception, decided in
``documents.ingest.parse_document``: small plain-text files, whose decoding cannot hang or balloon.)
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


def detect_kind(path: Path, filename: str = "", content_type: str = "") -> str:
    """The parser for a file, from its first bytes, then its name, then its declared type."""
    with open(path, "rb") as handle:
        head = handle.read(8192)
    if not head:
        raise EmptyDocument()
    extension = EXTENSIONS.get(Path(filename or path.name).suffix.lower())
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        if extension == "docx" or _is_docx(path):
            return "docx"
        raise UnsupportedFileType(
            "This archive is not a Word document. Supported: PDF, Word (.docx), HTML, Markdown and plain text."
        )
    if extension in ("pdf", "docx"):
        # The name promises a binary format the bytes do not have (a renamed file).
        raise UnsupportedFileType(
            f"The file is named .{extension} but is not a {'PDF' if extension == 'pdf' else 'Word document'}. "
            "Supported: PDF, Word (.docx), HTML, Markdown and plain text."
        )
    if _looks_binary(head):
        raise UnsupportedFileType()
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


def _looks_binary(head: bytes) -> bool:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False  # UTF-16 text has NUL bytes by design
    if b"\x00" in head:
        return True
    if head.startswith((b"\x7fELF", b"MZ", b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"\x1f\x8b")):
        return True
    return False


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
        raise DocumentTooLarge(
            f"The document holds {characters:,} characters of text; the limit is {max_characters:,} "
            "(PARSE_MAX_CHARACTERS). Split it into smaller files."
        )
    if not sections:
        if kind == "pdf":
            raise NoExtractableText()
        raise EmptyDocument("The file contains no text to index.")
    return sections


def parse_pdf(path: Path, *, max_pages: int) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted:
            # Many PDFs are "encrypted" with an empty user password only to set permissions.
            try:
                if not reader.decrypt(""):
                    raise EncryptedDocument()
            except (FileNotDecryptedError, DependencyError, NotImplementedError) as error:
                raise EncryptedDocument() from error
        count = len(reader.pages)
    except IngestError:
        raise
    except RecursionError as error:
        raise CorruptDocument("The PDF's page tree refers to itself; the file is damaged.") from error
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as error:
        raise CorruptDocument(f"The PDF is damaged and could not be read ({_short(error)}).") from error
    if count == 0:
        raise CorruptDocument("The PDF has no pages; the file is damaged or truncated.")
    if count > max_pages:
        raise DocumentTooLarge(f"The PDF has {count:,} pages; the limit is {max_pages:,} (PARSE_MAX_PAGES).")
    sections = []
    failed_pages = 0
    for number, page in enumerate(reader.pages, start=1):
        try:
            text = page.extract_text() or ""
        except RecursionError as error:
            raise CorruptDocument("The PDF's structure refers to itself; the file is damaged.") from error
        except Exception:  # one damaged page must not cost the others
            failed_pages += 1
            logger.warning("page %s of %s could not be read", number, path.name, exc_info=True)
            continue
        if text.strip():
            sections.append(Section(text=text, page=number))
    if not sections and failed_pages:
        raise CorruptDocument(f"None of the PDF's {count} pages could be read; the file is damaged.")
    return sections


def parse_docx(path: Path) -> list[Section]:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        with zipfile.ZipFile(path) as archive:
            expanded = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile as error:
        raise CorruptDocument("The Word document is damaged (not a valid .docx archive).") from error
    if expanded > DOCX_MAX_UNCOMPRESSED:
        raise DocumentTooLarge(
            f"The Word document expands to {expanded // 2**20:,} MB of content; that is too large to process."
        )
    try:
        document = docx.Document(str(path))
    except MemoryError:
        raise  # inflating the parts hit the memory limit: the guard says so (PARSE_MAX_MEMORY_MB)
    except Exception as error:
        from lxml import etree

        if isinstance(error, etree.XMLSyntaxError) and error.code == etree.ErrorTypes.ERR_NO_MEMORY:
            raise MemoryError() from error  # libxml2 ran out of memory: the same limit, not a damaged file
        raise CorruptDocument(f"The Word document is damaged and could not be read ({_short(error)}).") from error

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
            rows = []
            for row in block.rows:
                cells = []
                for cell in row.cells:
                    value = " ".join(cell.text.split())
                    if not cells or cells[-1] != value:  # merged cells repeat their text
                        cells.append(value)
                rows.append(" | ".join(cells))
            if any(r.strip(" |") for r in rows):
                lines.append("\n".join(rows))
    flush()
    return sections


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
    message = str(error).strip() or error.__class__.__name__
    return message[:120]


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
        raise ParsingTimeout(
            f"Reading the file took longer than {timeout:g} seconds and was stopped; the file may be malformed."
        )
    if not data:
        raise DocumentTooLarge(
            "Reading the file needed more memory than allowed (PARSE_MAX_MEMORY_MB) or crashed the reader; "
            "the file may be malformed or too complex."
        )
    status, payload = pickle.loads(data)
    if status == "ok":
        return [Section(text, page, tuple(heading)) for text, page, heading in payload]
    raise ERRORS.get(status, CorruptDocument)(payload)


ERRORS = {cls.__name__: cls for cls in (CorruptDocument, DocumentTooLarge, EmptyDocument, EncryptedDocument,
                                        NoExtractableText, UnsupportedFileType, IngestError)}


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
        return error.__class__.__name__, str(error)
    except MemoryError:
        return "DocumentTooLarge", "Reading the file needed more memory than allowed (PARSE_MAX_MEMORY_MB)."
    except RecursionError:
        return "CorruptDocument", "The file's structure is nested too deeply to read; it may be malformed."
    except Exception as error:  # the reason travels to the parent, which marks the document
        return "CorruptDocument", f"The file could not be read ({_short(error)})."


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
