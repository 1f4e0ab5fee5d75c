"""PDF: each page's text, by PDFium, or by pypdf when PDFium cannot read the file."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from documents.exceptions import CorruptDocument, DocumentTooLarge, EncryptedDocument, IngestError
from documents.parsing.base import Section, _short
from documents.parsing.limits import check_page_count

logger = logging.getLogger(__name__)


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
    check_page_count(count, max_pages)
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
        check_page_count(count, max_pages)
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


def parse_path(path: Path, *, max_pages: int) -> list[Section]:
    return parse_pdf(path, max_pages=max_pages)
