"""The errors people see when a document cannot be ingested. Each message is a sentence
a person understands; it is stored on the document and shown in the list and the admin."""


class IngestError(Exception):
    """A document cannot be ingested; ``str(error)`` is shown to its owner."""

    default_message = "This document could not be processed."

    def __init__(self, message: str | None = None):
        super().__init__(message or self.default_message)


class UnsupportedFileType(IngestError):
    default_message = (
        "This file type is not supported. Supported: PDF, Word (.docx), HTML, Markdown and plain text."
    )


class EmptyDocument(IngestError):
    default_message = "The file is empty."


class EncryptedDocument(IngestError):
    default_message = "The PDF is password-protected; upload a copy without a password."


class NoExtractableText(IngestError):
    default_message = (
        "No extractable text (scanned?): the pages seem to be images only. "
        "Run OCR on the file and upload the result."
    )


class CorruptDocument(IngestError):
    default_message = "The file is damaged and could not be read."


class DocumentTooLarge(IngestError):
    default_message = "The document is too large to process."


class ParsingTimeout(IngestError):
    default_message = "Reading the file took too long and was stopped; the file may be malformed."


class EmbeddingError(IngestError):
    default_message = "The embedding service failed; try again later."


class DimensionMismatch(IngestError):
    default_message = "The embedding model's dimension does not match the database's vector column."


class UploadRejected(IngestError):
    """An upload refused before it is stored; ``status_code`` is the HTTP answer."""

    status_code = 400


class FileTooLarge(UploadRejected):
    status_code = 413
    default_message = "The file is too large."


class InvalidCollectionName(UploadRejected):
    default_message = "A collection name cannot contain control characters."


class DuplicateDocument(UploadRejected):
    status_code = 409

    def __init__(self, existing):
        self.existing = existing
        super().__init__(
            f"This file is already in the collection “{existing.collection}” as “{existing.title}”."
        )


class IndexBuildRefused(ValueError):
    """A vector index cannot be built as asked (documents.indexes); the message says why and what to do."""
