"""Services that write documents: create on upload, re-ingest, cancel, delete (one or many); collections for uploads."""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import re
import weakref
from typing import Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import Storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import services as audit
from core import uploads
from documents.exceptions import DuplicateDocument, EmptyDocument, FileTooLarge, InvalidCollectionName
from documents.models import Chunk, ChunkVector, Collection, Document
from documents.parsing import check_supported_upload
from documents.queue import enqueue_ingestion, send_ingestion
from documents.selectors import PENDING, BulkSelection, bulk_selection

logger = logging.getLogger(__name__)

DEFAULT_COLLECTION_NAME = "My documents"


def clean_filename(name: str) -> str:
    """A display name from whatever the client sent: no path, no control characters, ≤ 200."""
    name = os.path.basename(name.replace("\\", "/")) or "untitled"
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).strip() or "untitled"
    if len(name) > 200:
        stem, ext = os.path.splitext(name)
        name = stem[: 200 - len(ext[:20])] + ext[:20]
    return name


def upload_collection(*, user: Any, name: str | None = None) -> tuple[Collection, bool]:
    """The caller's own collection of that name, and whether it was created now (they have none of that
    name): the upload then says so (``collection_created_message``), so that a typo is seen at once."""
    name = (name or DEFAULT_COLLECTION_NAME).strip()[:200] or DEFAULT_COLLECTION_NAME
    if re.search(r"[\x00-\x1f\x7f]", name):  # text cannot hold NUL; no name needs the others
        raise InvalidCollectionName()
    return Collection.objects.get_or_create(owner=user, name=name)


def collection_for_upload(*, user: Any, name: str | None = None) -> Collection:
    """The caller's own collection of that name, created if they have none (``upload_collection``)."""
    return upload_collection(user=user, name=name)[0]


def collection_created_message(collection: Collection) -> str:
    """What an upload that created its collection says, on the page and in the API's answer."""
    return f"New collection “{collection.name}” created."


def sha256_of(file: File[Any]) -> str:
    digest = hashlib.sha256()
    file.seek(0)
    for block in file.chunks():
        digest.update(block)
    file.seek(0)
    return digest.hexdigest()


def check_upload(*, file: File[Any], collection: Collection) -> str:
    """Refuse files over the size limit, of a type no parser reads, or already in the collection; returns the sha256."""
    if file.size > settings.MAX_UPLOAD_BYTES:
        raise FileTooLarge(uploads.limit_message())
    check_supported_upload(file)
    sha256 = sha256_of(file)
    existing = Document.objects.filter(collection=collection, sha256=sha256).first()
    if existing is not None:
        raise DuplicateDocument(existing)
    return sha256


@transaction.atomic
def document_create(
    *,
    owner: Any,
    file: File[Any],
    collection: Collection,
    filename: str | None = None,
    title: str | None = None,
    metadata: dict[str, Any] | None = None,
    external_id: str = "",
    enqueue: bool = True,
) -> Document:
    """Store an upload and queue its ingestion once the row is committed.

    The row is inserted before the file is stored: of concurrent uploads of one file into one collection,
    the unique constraint lets one through and refuses the others (``DuplicateDocument``) before they
    write anything. The stored file lives exactly as long as the transaction that inserted its row: it
    is deleted when that transaction (or the caller's around it) rolls back, for whatever reason.
    """
    sha256 = check_upload(file=file, collection=collection)
    size = file.size
    filename = clean_filename(filename or getattr(file, "name", "") or "untitled")
    content_type = (getattr(file, "content_type", None) or mimetypes.guess_type(filename)[0] or "")[:150]
    document = Document(
        owner=owner,
        collection=collection,
        title=(title or os.path.splitext(filename)[0] or filename)[:300],
        original_filename=filename,
        content_type=content_type,
        size=size,
        sha256=sha256,
        external_id=external_id,
        metadata=metadata or {},
        queued_at=timezone.now(),
    )
    if size == 0:
        # Nothing to parse: say so at once rather than queueing work that must fail.
        document.status = Document.Status.FAILED
        document.error = EmptyDocument.default_message
        document.finished_at, document.queued_at = timezone.now(), None
    _insert_unless_duplicate(document)
    document.file.save(filename, file, save=False)
    queue = enqueue and document.status == Document.Status.QUEUED
    transaction.on_commit(_UploadCommitted(document, queue=queue))
    Document.objects.filter(pk=document.pk).update(file=document.file.name)
    audit.record(action="upload", actor=owner, target=document, size=size, collection=collection.name,
                 filename=filename)
    return document


UNIQUE_FILE_PER_COLLECTION = "unique_file_per_collection"


def _insert_unless_duplicate(document: Document) -> None:
    """Insert the row, or raise ``DuplicateDocument`` when its file is already in the collection.

    A concurrent upload of the same file waits on the unique index until the first one commits (then
    this insert is refused and the committed row is read) or rolls back (then this one goes in).
    """
    for attempt in range(3):
        try:
            with transaction.atomic():
                document.save(force_insert=True)
            return
        except IntegrityError as error:
            if getattr(getattr(error.__cause__, "diag", None), "constraint_name", None) != UNIQUE_FILE_PER_COLLECTION:
                raise
            existing = Document.objects.filter(collection=document.collection, sha256=document.sha256).first()
            if existing is not None:
                raise DuplicateDocument(existing) from None
            if attempt == 2:
                raise
            # The row in the way was deleted before it could be read: try again.


class _UploadCommitted:
    """An upload's on_commit callback: keep its stored file, then queue its ingestion.

    Django has no rollback hook, but it drops the pending on_commit callbacks of a transaction or
    savepoint that rolls back. This callback is then freed without having run, and its finalizer
    deletes the file, at once: nothing else refers to it (CPython frees it when Django lets go of its
    list). A process that dies mid-transaction can still leave a file. Django also skips the callbacks
    after one that raises: a caller's own on_commit callback, registered before the upload in the same
    transaction, should be ``robust=True``.
    """

    def __init__(self, document: Document, *, queue: bool) -> None:
        self.document, self.queue = document, queue
        self.committed: list[bool] = []  # shared with the finalizer, which must not refer to self
        finalizer = weakref.finalize(self, _delete_uncommitted, document.file.storage, document.file.name,
                                     self.committed)
        finalizer.atexit = False  # at exit the transaction's fate is unknown: keep the file

    def __call__(self) -> None:
        self.committed.append(True)
        if self.queue:
            send_ingestion(self.document)


def _delete_uncommitted(storage: Storage, name: str | None, committed: list[bool]) -> None:
    if committed or not name:  # kept, or never stored
        return
    try:
        storage.delete(name)
    except OSError:  # a finalizer cannot raise: say so, and leave it
        logger.exception("could not delete %s, stored by an upload that was rolled back", name)


def document_reingest(*, document: Document, actor: Any = None) -> None:
    """Queue a document again, from scratch; its chunks are replaced when the new run stores."""
    audit.record(action="reingest", actor=actor, target=document)
    now = timezone.now()
    Document.objects.filter(pk=document.pk).update(
        status=Document.Status.QUEUED, progress=0.0, error="", error_detail="", attempts=0, queued_at=now,
        finished_at=None, updated_at=now,
    )
    document.status, document.progress, document.error, document.attempts = Document.Status.QUEUED, 0.0, "", 0
    enqueue_ingestion(document)


def document_moved(*, document: Document, actor: Any = None) -> bool:
    """After ``document`` moved to another collection: queue it again when its vectors do not fit there.

    Its chunks and their vectors followed it (a trigger, migration 0005), but vectors are only comparable
    within one embedding space: when the new collection searches (or, during a migration, also fills) a space
    the document has no vectors in, it is ingested again, which embeds it for that collection's spaces.
    True when it was queued again.
    """
    collection = Collection.objects.get(pk=document.collection_id)
    spaces = [space_id for space_id in (collection.active_space_id, collection.target_space_id) if space_id]
    chunk_ids = Chunk.objects.filter(document_id=document.pk).values("pk")
    chunks = chunk_ids.count()
    if document.status != Document.Status.READY or not chunks:
        return False  # not stored yet: its run embeds for the collection it finds when it stores
    # By chunk id: each partition's primary key (chunk_id, space_id) finds them.
    present = ChunkVector.objects.filter(chunk_id__in=chunk_ids, space_id__in=spaces).count()
    if present >= chunks * len(spaces):
        return False
    document_reingest(document=document, actor=actor)
    return True


@transaction.atomic
def document_cancel(*, document: Document, actor: Any = None) -> bool:
    """Cancel a queued or running ingestion; False when it had already finished.

    A running task notices between stages and embedding batches (at its next progress write) and stops;
    the store refuses, under the document's row lock, a document cancelled meanwhile. Re-ingest starts
    it again from scratch.
    """
    who = actor.get_username() if getattr(actor, "is_authenticated", False) else ""
    reason = f"Cancelled by {who}." if who else "Cancelled."
    now = timezone.now()
    # Waits for a store in progress (its row lock); then the WHERE sees the stored status and cancels nothing.
    cancelled = Document.objects.filter(pk=document.pk, status__in=PENDING).update(
        status=Document.Status.CANCELLED, error=reason, progress=0.0, finished_at=now, updated_at=now
    )
    if not cancelled:
        document.refresh_from_db(fields=["status", "error", "progress", "chunk_count", "finished_at"])
        return False
    audit.record(action="cancel", actor=actor, target=document, was=document.status)
    document.status, document.error, document.progress, document.finished_at = (
        Document.Status.CANCELLED, reason, 0.0, now
    )
    return True


@transaction.atomic
def document_delete(*, document: Document, actor: Any = None) -> None:
    """Delete a document with its chunks, and its file when no other document shares it."""
    audit.record(action="delete", actor=actor, target=document, collection=document.collection.name,
                 chunks=document.chunk_count)
    file_name = document.file.name
    document.delete()
    if file_name and not Document.objects.filter(file=file_name).exists():
        transaction.on_commit(lambda: document.file.storage.delete(file_name))


@transaction.atomic
def documents_bulk_delete(*, actor: Any, ids: list[int]) -> BulkSelection:
    """Delete those of ``ids`` that ``actor`` manages, all or none; returns what was deleted and what was not.

    The selection is made here, by ``bulk_selection`` (the page's confirmation shows the same one): a
    crafted request cannot reach a document its sender does not manage. One audit event for the batch,
    besides each document's own.
    """
    selection = bulk_selection(user=actor, ids=ids, action="delete")
    _record_bulk("bulk_delete", actor, selection)  # first: a deleted instance has no pk any more
    for document in selection.documents:
        document_delete(document=document, actor=actor)
    return selection


@transaction.atomic
def documents_bulk_reingest(*, actor: Any, ids: list[int]) -> BulkSelection:
    """Queue again those of ``ids`` that ``actor`` manages and where processing again can help.

    Their tasks are sent once the transaction commits (one per document, as for a single re-ingest).
    """
    selection = bulk_selection(user=actor, ids=ids, action="reingest")
    _record_bulk("bulk_reingest", actor, selection)
    for document in selection.documents:
        document_reingest(document=document, actor=actor)
    return selection


def _record_bulk(action: str, actor: Any, selection: BulkSelection) -> None:
    refused = [document.pk for documents in selection.refused.values() for document in documents]
    audit.record(action=action, actor=actor, object_type="documents.document",
                 object_repr=f"{len(selection.ids)} documents", documents=selection.ids, refused=refused)
