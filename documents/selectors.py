"""Read queries: which documents and collections a user sees, and the one access rule for each object.

Every view and API endpoint that takes a document's or a collection's id looks it up here, first
(as healthchecks' ``_get_check_for_user``): an id the user may not read is not found (404), never
forbidden, so that ids say nothing about what others have.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from django.core.paginator import Page, Paginator
from django.db.models import BooleanField, ExpressionWrapper, OrderBy, Q, Subquery
from django.db.models.functions import Lower
from django.shortcuts import get_object_or_404

from core.http import parse_id
from core.text import without_surrogates
from documents.exceptions import (
    CorruptDocument,
    DocumentTooLarge,
    EmptyDocument,
    EncryptedDocument,
    NoExtractableText,
    UnsupportedFileType,
)
from documents.models import Collection, Document, DocumentQuerySet
from documents.parsing import detect
from documents.progress import Progress, describe

# A document still to be ingested: waiting for a worker or in a worker's hands.
PENDING = (Document.Status.QUEUED, Document.Status.PROCESSING)


def documents_for_user(*, user) -> DocumentQuerySet:
    """Every document ``user`` may read, with its collection."""
    return Document.objects.visible_to(user).select_related("collection")


class DocumentProgress(Progress):
    """A document's state as the library page's progress bars read it (with documents.progress's words)."""

    id: int
    title: str
    collection: str
    status: str
    status_label: str
    progress: float
    chunk_count: int
    error: str
    reingest_offered: bool


def progress_of(document: Document) -> DocumentProgress:
    return DocumentProgress(
        id=document.pk,
        title=document.title,
        collection=document.collection.name,
        status=document.status,
        status_label=document.get_status_display(),
        progress=round(document.progress, 3),
        chunk_count=document.chunk_count,
        error=document.error,
        reingest_offered=reingest_offered(document),
        **describe(document),
    )


# The most documents one status poll reports.
PROGRESS_MAX_DOCUMENTS = 500


def documents_progress(*, user, ids: list[int] | None = None) -> list[DocumentProgress]:
    """The progress of the documents ``user`` may read: those of ``ids`` (none for an empty list), or all."""
    documents = documents_for_user(user=user)
    if ids is not None:
        documents = documents.filter(pk__in=ids)
    return [progress_of(document) for document in documents[:PROGRESS_MAX_DOCUMENTS]]


def document_for_user(user, pk: int) -> tuple[Document, bool]:
    """The document ``pk`` if ``user`` may read it, and whether they may also manage it; else Http404.

    Managing (delete, cancel, re-ingest) is for its uploader and its collection's owner; members only read.
    """
    document = get_object_or_404(documents_for_user(user=user), pk=pk)
    return document, document.is_managed_by(user)


def managers_only(action: str) -> str:
    """Why a reader who does not manage a document cannot ``action`` it: one wording for pages and APIs."""
    return f"Only the uploader or the collection's owner can {action} this document."


def collection_for_user(user, pk: int) -> tuple[Collection, bool]:
    """The collection ``pk`` if ``user`` may read it (its owner or a member), and whether they own it; else Http404."""
    collection = get_object_or_404(Collection.objects.visible_to(user), pk=pk)
    return collection, collection.owner_id == user.pk


# ---------------------------------------------------------------------------------------------------------
# The library page: search, filters, sort and paging; what each row may offer; a document's chunk pages.

LIBRARY_PAGE_SIZE = 50
CHUNK_PAGE_SIZE = 50
# The most documents one bulk action takes (a page holds 50; the rest is refused, not silently dropped).
BULK_MAX_DOCUMENTS = 500

# File types people filter by: the parser kinds of documents.parsing.detect, with the label shown.
KIND_LABELS = {"pdf": "PDF", "docx": "Word", "html": "HTML", "markdown": "Markdown", "text": "Text"}
# ?sort= value -> ORDER BY; "-" first means descending. Ties are broken by id, so pages never overlap.
SORTS: dict[str, tuple[str | OrderBy, str]] = {
    "name": (Lower("title").asc(), "id"), "-name": (Lower("title").desc(), "-id"),
    "date": ("created_at", "id"), "-date": ("-created_at", "-id"),
    "size": ("size", "id"), "-size": ("-size", "-id"),
}
DEFAULT_SORT = "-date"


@dataclass(frozen=True)
class LibraryFilters:
    """What the library page is asked to show, read leniently from its query string (unknown values are ignored)."""

    q: str = ""
    collection: int | None = None
    status: str = ""
    kind: str = ""
    sort: str = DEFAULT_SORT

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> LibraryFilters:
        status, kind, sort = query.get("status", ""), query.get("type", ""), query.get("sort", "")
        # Text PostgreSQL can hold (no NUL, no lone surrogate), spaces as one.
        q = " ".join(without_surrogates(query.get("q", "")).replace("\x00", " ").split())[:200]
        return cls(
            q=q,
            collection=parse_id(query.get("collection", "")),
            status=status if status in Document.Status.values else "",
            kind=kind if kind in KIND_LABELS else "",
            sort=sort if sort in SORTS else DEFAULT_SORT,
        )

    @property
    def active(self) -> bool:
        """Whether anything narrows the list (the sort does not)."""
        return bool(self.q or self.collection or self.status or self.kind)


def _extensions_of(kind: str) -> list[str]:
    return [extension for extension, of in detect.EXTENSIONS.items() if of == kind]


def _ending_in(extensions: list[str]) -> Q:
    alternatives = "|".join(re.escape(extension.lstrip(".")) for extension in extensions)
    return Q(original_filename__iregex=rf"\.({alternatives})$")


def _kind_q(kind: str) -> Q:
    """Documents of ``kind``: by their name's extension, or by content type when the name has no known one.

    One regular expression each, and the cheap content-type test before the second: 4x faster to count
    than a LIKE per extension at 10,000 documents (bench/library_page.py).
    """
    types = [content_type for content_type, of in detect.CONTENT_TYPES.items() if of == kind]
    return _ending_in(_extensions_of(kind)) | (Q(content_type__in=types) & ~_ending_in(list(detect.EXTENSIONS)))


def kind_of(document: Document) -> str:
    """The document's file type as ``_kind_q`` decides it ("" when neither its name nor its type says)."""
    extension = os.path.splitext(document.original_filename.lower())[1]
    return detect.EXTENSIONS.get(extension) or detect.CONTENT_TYPES.get(document.content_type, "")


def download_type(document: Document) -> str:
    """The Content-Type to send a document's file with: its own when it is a type we read, else a neutral one
    (the stored type is what the uploader's browser claimed)."""
    return document.content_type if document.content_type in detect.CONTENT_TYPES else "application/octet-stream"


def library_documents(*, user, filters: LibraryFilters) -> DocumentQuerySet:
    """The documents of the library page: readable by ``user``, narrowed by ``filters``, in their order."""
    documents = documents_for_user(user=user)
    if filters.q:
        documents = documents.filter(title__icontains=filters.q)
    if filters.collection:
        documents = documents.filter(collection_id=filters.collection)
    if filters.status:
        documents = documents.filter(status=filters.status)
    if filters.kind:
        documents = documents.filter(_kind_q(filters.kind))
    return documents.defer("metadata", "error_detail").order_by(*SORTS[filters.sort])


def library_page(*, user, filters: LibraryFilters, page: str | int | None = None) -> Page:
    """One page of ``library_documents``, each ready to render as a row (``row_facts``); two queries."""
    paginator = Paginator(library_documents(user=user, filters=filters), LIBRARY_PAGE_SIZE)
    result = paginator.get_page(page)  # a page number that is not one: the first or the last page
    for document in result.object_list:
        row_facts(document, user)
    return result


# Messages of failures that the same file gives again however often it is processed: re-ingesting those
# cannot help (the person must upload another copy, as each message says). The others (time limits,
# the embedding service, an unexpected error) may pass on another try. Templates become patterns.
_LASTING_FAILURES = (EmptyDocument, EncryptedDocument, NoExtractableText, CorruptDocument, UnsupportedFileType)


def _message_patterns() -> re.Pattern[str]:
    messages = [cls.default_message for cls in _LASTING_FAILURES]
    for cls in _LASTING_FAILURES:
        messages += [value for name, value in vars(cls).items() if name.isupper() and isinstance(value, str)]
    messages += [DocumentTooLarge.PAGES, DocumentTooLarge.CHARACTERS, DocumentTooLarge.EXPANDS]
    patterns = [re.sub(r"\\\{[^}]*\\\}", ".+", re.escape(message)) for message in messages]
    return re.compile("|".join(f"(?:{pattern})" for pattern in patterns))


_LASTING = _message_patterns()


def reingest_helps(document: Document) -> bool:
    """Whether processing the document again could give another result: not for an empty file, one of a
    type no parser reads, or a failure that the same file gives every time (damaged, password, no text)."""
    if document.size == 0 or not kind_of(document):
        return False
    return not (document.status == Document.Status.FAILED and _LASTING.fullmatch(document.error))


def reingest_offered(document: Document) -> bool:
    """Whether a page offers Re-ingest (to whoever manages the document): not while it is queued or being
    processed (Cancel is offered then), and only where processing again could help (``reingest_helps``).
    The row, the document's page and the status JSON the pages update themselves from all ask this."""
    return not document.is_pending and reingest_helps(document)


def row_facts(document: Document, user) -> Document:
    """Set what a row of the library shows besides the model's fields: ``can_manage``, ``can_reingest``, ``kind``."""
    document.can_manage = document.is_managed_by(user)  # type: ignore[attr-defined]
    document.can_reingest = document.can_manage and reingest_offered(document)  # type: ignore[attr-defined]
    document.kind_label = KIND_LABELS.get(kind_of(document), "Other")  # type: ignore[attr-defined]
    return document


def library_collections(*, user) -> list[Collection]:
    """The collections the library's filter offers: every one ``user`` may read, with its owner's name, and
    ``last_upload``: whether it holds the newest document ``user`` uploaded (in the same query: the
    subquery is run once, on the (owner, -created_at) index)."""
    newest_upload = Document.objects.filter(owner=user).order_by("-created_at", "-id").values("collection_id")[:1]
    return list(
        Collection.objects.visible_to(user).select_related("owner")
        .annotate(last_upload=ExpressionWrapper(Q(pk=Subquery(newest_upload)), output_field=BooleanField()))
        .order_by("name", "id")
    )


def upload_collection_default(*, user, collections: list[Collection], filters: LibraryFilters) -> Collection | None:
    """The collection the upload form offers first (of ``library_collections``): the one the list is filtered
    on when it is the user's, else the one they uploaded to last, else their newest; None when they own none.
    Never merely the first by name: that one is as likely a typo's as any."""
    own = [collection for collection in collections if collection.owner_id == user.pk]
    return (
        next((c for c in own if c.pk == filters.collection), None)
        or next((c for c in own if getattr(c, "last_upload", False)), None)
        or max(own, key=lambda c: (c.created_at, c.pk), default=None)
    )


@dataclass
class BulkSelection:
    """The documents a bulk action would change, and those it leaves alone with why (one line per reason)."""

    action: str
    documents: list[Document] = field(default_factory=list)
    refused: dict[str, list[Document]] = field(default_factory=dict)

    @property
    def ids(self) -> list[int]:
        return [document.pk for document in self.documents]


BULK_ACTIONS = ("delete", "reingest")


def bulk_selection(*, user, ids: list[int], action: str) -> BulkSelection:
    """Which of ``ids`` ``user`` may ``action`` ("delete" or "reingest"): readable, managed by them, and
    for re-ingest, where it can help. Ids they may not read are left out without a word (as a 404 would)."""
    if action not in BULK_ACTIONS:
        raise ValueError(f"unknown bulk action {action!r}")
    selection = BulkSelection(action=action)
    wanted = list(dict.fromkeys(ids))[:BULK_MAX_DOCUMENTS]
    documents = documents_for_user(user=user).filter(pk__in=wanted).defer("metadata", "error_detail")
    not_theirs = managers_only("delete" if action == "delete" else "re-ingest")
    for document in documents.order_by(Lower("title"), "id"):
        if not document.is_managed_by(user):
            selection.refused.setdefault(not_theirs, []).append(document)
        elif action == "reingest" and document.is_pending:
            selection.refused.setdefault(ALREADY_PENDING, []).append(document)
        elif action == "reingest" and not reingest_helps(document):
            selection.refused.setdefault(REINGEST_CANNOT_HELP, []).append(document)
        else:
            selection.documents.append(document)
    return selection


ALREADY_PENDING = "Each is already waiting to be processed, or being processed."
REINGEST_CANNOT_HELP = (
    "Processing again would give the same result (an empty or unreadable file, or one of a type that "
    "cannot be read): upload another copy instead."
)


def chunk_page(
    document: Document, *, page: str | int | None = None, chunk: int | None = None
) -> tuple[Page, int | None]:
    """A page of the document's chunks in order, and the chunk to highlight.

    With ``chunk`` (a citation's chunk of this document) the page that holds it, whatever ``page`` says;
    a chunk of another document or none is ignored (the ``page`` asked for is shown).
    """
    # document_id too: the related manager sets each chunk's document from it (deferred, a query per chunk).
    chunks = document.chunks.only("id", "document_id", "ordinal", "text", "page", "heading").order_by("ordinal")
    paginator = Paginator(chunks, CHUNK_PAGE_SIZE)
    if chunk is not None:
        ordinal = document.chunks.filter(pk=chunk).values_list("ordinal", flat=True).order_by().first()
        if ordinal is None:
            chunk = None
        else:  # its position among the chunks (ordinals are dense, but counting does not rely on it)
            before = document.chunks.filter(ordinal__lt=ordinal).count()
            page = before // CHUNK_PAGE_SIZE + 1
    return paginator.get_page(page), chunk
