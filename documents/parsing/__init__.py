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

from documents.parsing.base import CONTROL, Parser, Section, clean_text
from documents.parsing.detect import (
    CONTENT_TYPES,
    EXTENSIONS,
    HEAD_BYTES,
    KINDS,
    REFUSED_EXTENSIONS,
    check_supported,
    check_supported_upload,
    detect_kind,
)
from documents.parsing.docx import parse_docx
from documents.parsing.guard import parse_file_guarded
from documents.parsing.html import parse_html
from documents.parsing.markdown import parse_markdown
from documents.parsing.pdf import PDF_READERS, parse_pdf, pdf_has_images, read_pdf_pdfium, read_pdf_pypdf
from documents.parsing.registry import PARSERS, parse_file
from documents.parsing.text import decode_text

__all__ = [
    "CONTENT_TYPES", "CONTROL", "EXTENSIONS", "HEAD_BYTES", "KINDS", "PARSERS", "PDF_READERS", "REFUSED_EXTENSIONS",
    "Parser", "Section", "check_supported", "check_supported_upload", "clean_text", "decode_text", "detect_kind",
    "parse_docx", "parse_file", "parse_file_guarded", "parse_html", "parse_markdown", "parse_pdf", "pdf_has_images",
    "read_pdf_pdfium", "read_pdf_pypdf",
]
