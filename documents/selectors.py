"""Read queries: which documents and collections a user sees, and the one access rule for each object.

Every view and API endpoint that takes a document's or a collection's id looks it up here, first
(as healthchecks' ``_get_check_for_user``): an id the user may not read is not found (404), never
forbidden, so that ids say nothing about what others have.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404

from documents.models import Collection, Document, DocumentQuerySet
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
