"""The errors people see when a document cannot be ingested or an upload is refused.

Each message is a plain sentence a person understands, saying what to do; it is stored on the
document and shown in the list and the admin. The library's own words (what pypdf, PDFium or
python-docx said) travel separately as ``detail``: logged, and stored in ``Document.error_detail``
for the operators (shown in the admin only). Every message lives here, as a class's
``default_message`` or one of its upper-case templates, so that tests/documents/test_failure_reasons.py can
read them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core import uploads

if TYPE_CHECKING:
    from documents.models import Document

SUPPORTED_FORMATS = "PDF, Word (.docx), HTML, Markdown and plain text"


class IngestError(Exception):
    """A document cannot be ingested; ``str(error)`` is shown to its owner, ``detail`` to the operators."""

    default_message = "This document could not be processed; try Re-ingest, and if it fails again ask an administrator."

    def __init__(self, message: str | None = None, *, detail: str = ""):
        super().__init__(message or self.default_message)
        self.detail = detail


class EmptyDocument(IngestError):
    default_message = "The file is empty; upload a copy that has the document's text in it."
    NO_TEXT = "The file contains no text to index; check that you uploaded the right file."


class EncryptedDocument(IngestError):
    default_message = "The PDF is password-protected; upload a copy without a password."


class NoExtractableText(IngestError):
    """A PDF with pages but no text: scanned pictures (OCR helps) or blank pages (it does not)."""

    default_message = (
        "The PDF has no text to read: its pages are scanned images. "
        "Run it through text recognition (OCR) and upload the result."
    )
    BLANK = "The PDF's pages are blank: there is no text to index; check that you uploaded the right file."


class CorruptDocument(IngestError):
    default_message = (
        "The file is damaged and cannot be read; open it in the program that made it, "
        "save it again and upload the new copy."
    )
    PDF = (
        "The PDF is damaged and cannot be read; open it in a PDF viewer or the program that made it, "
        "save or print it as a new PDF and upload that copy."
    )
    DOCX = (
        "The Word document is damaged and cannot be read; open it in Word, save it as a new .docx "
        "and upload that copy."
    )
    STRUCTURE = (
        "The file's structure is nested too deeply to read; save it again in the program that made it "
        "and upload the new copy."
    )


class DocumentTooLarge(IngestError):
    default_message = "The document is too large to process; split it into smaller files and upload those."
    PAGES = "The PDF has {count:,} pages; the limit is {limit:,}. Split it into smaller files and upload those."
    CHARACTERS = (
        "The document holds {count:,} characters of text; the limit is {limit:,}. "
        "Split it into smaller files and upload those."
    )
    EXPANDS = (
        "The Word document expands to {megabytes:,} MB of content, too large to process; "
        "split it into smaller documents and upload those."
    )
    MEMORY = (
        "Reading the file needed more memory than this server allows; "
        "split it into smaller files, or save it again in a simpler form, and upload those."
    )


class ParsingTimeout(IngestError):
    default_message = (
        "Reading the file took too long and was stopped; save it again in the program that made it, "
        "or split it into smaller files, and upload those."
    )


class ProcessingTimeLimit(IngestError):
    default_message = (
        "Processing took longer than the time limit and was stopped; split the document into smaller "
        "files and upload those."
    )


class UnexpectedFailure(IngestError):
    default_message = (
        "An unexpected error stopped the processing of this document; try Re-ingest, and if it fails "
        "again ask an administrator, who can see the details."
    )


class EmbeddingError(IngestError):
    default_message = (
        "The search service did not answer properly; try again in a few minutes, and if it keeps failing "
        "ask an administrator."
    )


class DimensionMismatch(IngestError):
    default_message = (
        "This installation's search index is set up for a different embedding model; ask an "
        "administrator to fix the setup, then re-ingest the document."
    )


class UploadRejected(IngestError):
    """An upload refused before it is stored; ``status_code`` is the HTTP answer."""

    status_code = 400


class UnsupportedFileType(UploadRejected):
    """Refused at upload (documents.parsing.check_supported); also the reason if one gets past it."""

    status_code = 415
    default_message = (
        "This file is not in a supported format; upload it as PDF, Word (.docx), HTML, Markdown or "
        f"plain text. Supported formats: {SUPPORTED_FORMATS}."
    )
    KIND = "This file is {what}, which cannot be read here; {advice}. Supported formats: " + SUPPORTED_FORMATS + "."
    PROTECTED = (
        "This Office document is password-protected; open it, remove the password, save it and upload that "
        "copy. Supported formats: " + SUPPORTED_FORMATS + "."
    )
    MISNAMED = (
        "The file is named .{extension} but is not {what}; check that you chose the right file. "
        "Supported formats: " + SUPPORTED_FORMATS + "."
    )


class FileTooLarge(UploadRejected):
    status_code = 413
    default_message = "The file is too large; split it into smaller files and upload those."
    OVER = uploads.TOO_LARGE  # the one wording of the limit, wherever it is enforced


class InvalidCollectionName(UploadRejected):
    default_message = "A collection name cannot contain control characters; use letters, digits and spaces."


class DuplicateDocument(UploadRejected):
    status_code = 409
    TEMPLATE = (
        "This file is already in the collection “{collection}” as “{title}”; "
        "use that one instead of uploading it again."
    )

    def __init__(self, existing: Document) -> None:
        self.existing = existing
        super().__init__(self.TEMPLATE.format(collection=existing.collection, title=existing.title))


class IndexBuildRefused(ValueError):
    """A vector index cannot be built as asked (documents.search.indexes); the message says why and what to do."""
