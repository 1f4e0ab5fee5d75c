"""Services that write documents: create on upload, ingest (parse → chunk → embed → store)."""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import os
import re
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import psycopg
import redis
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.files import File
from django.db import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    connections,
    transaction,
)
from django.db.models import F
from django.utils import timezone
from psycopg.types.json import Jsonb

from audit import services as audit
from core import uploads
from documents import embeddings
from documents.chunking import ChunkDraft, chunk_sections
from documents.db import vector_cursor
from documents.exceptions import (
    DuplicateDocument,
    EmptyDocument,
    FileTooLarge,
    IngestError,
    InvalidCollectionName,
    ProcessingTimeLimit,
    UnexpectedFailure,
)
from documents.models import Chunk, Collection, Document
from documents.parsing import Section, check_supported_upload, detect_kind, parse_file, parse_file_guarded

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


def collection_for_upload(*, user, name: str | None = None) -> Collection:
    """The caller's own collection of that name, created if they have none."""
    name = (name or DEFAULT_COLLECTION_NAME).strip()[:200] or DEFAULT_COLLECTION_NAME
    if re.search(r"[\x00-\x1f\x7f]", name):  # text cannot hold NUL; no name needs the others
        raise InvalidCollectionName()
    collection, _ = Collection.objects.get_or_create(owner=user, name=name)
    return collection


def collection_apply_distance(*, collection: Collection) -> int:
    """Move a collection's chunks to the partial HNSW index of its (changed) distance."""
    return Chunk.objects.filter(collection=collection).exclude(distance=collection.distance).update(
        distance=collection.distance
    )


def sha256_of(file: File) -> str:
    digest = hashlib.sha256()
    file.seek(0)
    for block in file.chunks():
        digest.update(block)
    file.seek(0)
    return digest.hexdigest()


def check_upload(*, file: File, collection: Collection) -> str:
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
    owner,
    file: File,
    collection: Collection,
    filename: str | None = None,
    title: str | None = None,
    metadata: dict | None = None,
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

    def __init__(self, document: Document, *, queue: bool):
        self.document, self.queue = document, queue
        self.committed: list[bool] = []  # shared with the finalizer, which must not refer to self
        finalizer = weakref.finalize(self, _delete_uncommitted, document.file.storage, document.file.name,
                                     self.committed)
        finalizer.atexit = False  # at exit the transaction's fate is unknown: keep the file

    def __call__(self) -> None:
        self.committed.append(True)
        if self.queue:
            send_ingestion(self.document)


def _delete_uncommitted(storage, name: str, committed: list[bool]) -> None:
    if committed:
        return
    try:
        storage.delete(name)
    except OSError:  # a finalizer cannot raise: say so, and leave it
        logger.exception("could not delete %s, stored by an upload that was rolled back", name)


QUEUE_UNREACHABLE = "The task queue cannot be reached right now; processing will start as soon as it is back."

# What sending a task raises when the broker is down, after the publish retry policy
# (CELERY_TASK_PUBLISH_RETRY_POLICY) gave up: kombu's OperationalError wraps the connection errors.
try:
    from kombu.exceptions import OperationalError as BrokerUnavailable
except ImportError:  # pragma: no cover — kombu comes with celery
    BrokerUnavailable = OSError
BROKER_ERRORS = (BrokerUnavailable, redis.exceptions.RedisError, OSError)


def enqueue_ingestion(document: Document) -> None:
    """Send the ingestion task after the surrounding transaction commits (never before)."""
    transaction.on_commit(lambda: send_ingestion(document))


def send_ingestion(document: Document) -> bool:
    """Hand the task to the broker; when it cannot be reached, keep the document queued and say so.

    The upload is already committed: it is never lost. ``queued_at`` empty marks it unsent, and the
    sweeper (``ingestions_sweep``) sends it when the broker answers again. The bounded publish retry
    policy keeps a request from hanging on a dead broker.
    """
    from documents.tasks import ingest_document

    try:
        ingest_document.delay(document.pk)
    except BROKER_ERRORS as error:
        logger.warning("could not queue document %s (%s); the sweeper will send it when the broker is back",
                       document.pk, error)
        Document.objects.filter(pk=document.pk, status=Document.Status.QUEUED).update(
            queued_at=None, error=QUEUE_UNREACHABLE
        )
        document.queued_at, document.error = None, QUEUE_UNREACHABLE
        return False
    return True


def document_reingest(*, document: Document, actor=None) -> None:
    """Queue a document again, from scratch; its chunks are replaced when the new run stores."""
    audit.record(action="reingest", actor=actor, target=document)
    now = timezone.now()
    Document.objects.filter(pk=document.pk).update(
        status=Document.Status.QUEUED, progress=0.0, error="", error_detail="", attempts=0, queued_at=now,
        finished_at=None, updated_at=now,
    )
    document.status, document.progress, document.error, document.attempts = Document.Status.QUEUED, 0.0, "", 0
    enqueue_ingestion(document)


PENDING = (Document.Status.QUEUED, Document.Status.PROCESSING)


class IngestCancelled(Exception):
    """This run's result is no longer wanted (cancelled, deleted or queued again meanwhile): store nothing."""


@transaction.atomic
def document_cancel(*, document: Document, actor=None) -> bool:
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
def document_delete(*, document: Document, actor=None) -> None:
    """Delete a document with its chunks, and its file when no other document shares it."""
    audit.record(action="delete", actor=actor, target=document, collection=document.collection.name,
                 chunks=document.chunk_count)
    file_name = document.file.name
    document.delete()
    if file_name and not Document.objects.filter(file=file_name).exists():
        transaction.on_commit(lambda: document.file.storage.delete(file_name))


def _set_progress(document_id: int, progress: float) -> None:
    """Show progress; the same statement finds out whether the run is still wanted."""
    # updated_at is also the run's heartbeat (see Heartbeat).
    written = Document.objects.filter(pk=document_id, status=Document.Status.PROCESSING).update(
        progress=progress, updated_at=timezone.now()
    )
    if not written:
        raise IngestCancelled("cancelled, deleted or queued again while it was processed")


class Heartbeat:
    """A thread that refreshes a running ingestion's heartbeat (``updated_at``) every INGEST_HEARTBEAT_SECONDS.

    The main thread may be silent for minutes (a parse in its guarded child, an embedding call and its
    retries); the heartbeat goes on all the same and stops only with the run or its process. So the sweeper
    tells a dead run (its worker killed) from a live one within INGEST_STALE_SECONDS, a minute by default,
    instead of waiting for the longest silent step, and long before the broker would redeliver the task of
    a worker killed whole (CELERY_VISIBILITY_TIMEOUT, an hour; Celery requeues at once only when a pool
    process dies under a living main process: CELERY_TASK_REJECT_ON_WORKER_LOST).
    """

    def __init__(self, document_id: int):
        self.document_id = document_id
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"ingest-heartbeat-{document_id}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        try:
            while not self._stopped.wait(settings.INGEST_HEARTBEAT_SECONDS):
                try:
                    Document.objects.filter(pk=self.document_id, status=Document.Status.PROCESSING).update(
                        updated_at=timezone.now()
                    )
                except DatabaseError as error:  # the database is away: the next beat tries again
                    logger.warning("heartbeat of document %s not written (%s)", self.document_id, error)
        finally:
            connections.close_all()  # this thread's own connection

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


def interrupted_reason(attempts: int) -> str:
    return (
        f"Processing was interrupted {attempts} time{'s' if attempts != 1 else ''} without finishing (the server "
        "stopped or ran out of memory), so it was given up. Re-ingest to try again; if it keeps happening, "
        "ask an administrator, who can see the details."
    )


def ingestions_sweep() -> dict[str, int]:
    """Nothing stays queued or processing forever: restart dead runs, re-send lost tasks, give up on the hopeless.

    - processing, but its heartbeat (``Heartbeat``) has stopped for INGEST_STALE_SECONDS: its run died
      (worker killed, out of memory, machine lost). Queued again, or failed with a reason after
      INGEST_MAX_ATTEMPTS runs.
    - queued, never handed to the broker (it was down at upload): sent now.
    - queued long ago while the broker's queue is empty: its message was lost (Redis restarted without
      persistence): sent again. A task for a document that finished meanwhile does nothing.
    Safe to run concurrently (beat ticks, workers starting): rows are taken with SKIP LOCKED.
    """
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.INGEST_STALE_SECONDS)
    rows = Document.objects.select_for_update(skip_locked=True)
    with transaction.atomic():
        stale = list(rows.filter(status=Document.Status.PROCESSING, updated_at__lt=stale_before)
                     .values_list("pk", "attempts"))
        exhausted = [pk for pk, attempts in stale if attempts >= settings.INGEST_MAX_ATTEMPTS]
        for pk, attempts in stale:
            if pk in exhausted:
                Document.objects.filter(pk=pk).update(
                    status=Document.Status.FAILED, error=interrupted_reason(attempts), progress=0.0,
                    finished_at=now, updated_at=now,
                )
        restart = [pk for pk, _ in stale if pk not in exhausted]
        if restart:
            Document.objects.filter(pk__in=restart).update(
                status=Document.Status.QUEUED, progress=0.0, queued_at=now, updated_at=now,
                error="Its worker stopped before finishing; it was queued again and will restart from the beginning.",
            )
        resend = list(rows.filter(status=Document.Status.QUEUED, queued_at__isnull=True).values_list("pk", flat=True))
        waiting = rows.filter(status=Document.Status.QUEUED, queued_at__lt=stale_before)
        if waiting.exists() and _broker_backlog() == 0:
            resend += list(waiting.values_list("pk", flat=True))
        if resend:
            Document.objects.filter(pk__in=resend).update(queued_at=now, error="")
    sent = [send_ingestion(document) for document in Document.objects.filter(pk__in=restart + resend)]
    counts = {"restarted": len(restart), "failed": len(exhausted), "resent": len(resend), "unsent": sent.count(False)}
    if any(counts.values()):
        logger.warning("ingestion sweep: %s", " ".join(f"{key}={value}" for key, value in counts.items()))
    return counts


def _broker_backlog() -> int | None:
    """Messages waiting in the ingestion queue; None when the broker cannot tell."""
    from kombu.exceptions import ChannelError

    from documents.tasks import ingest_document

    app = ingest_document.app
    try:
        with app.connection_for_write() as conn:
            try:
                return conn.default_channel.queue_declare(queue=app.conf.task_default_queue, passive=True).message_count
            except ChannelError:
                return 0  # the queue does not exist: nothing waits in it
    except BROKER_ERRORS as error:
        logger.warning("cannot count the ingestion queue (%s)", error)
        return None


PROGRESS_WRITE_SECONDS = 1.0


class _ProgressBar:
    """Writes a document's progress for the page's bar, at most once per PROGRESS_WRITE_SECONDS.

    Each write is a commit, i.e. a disk flush: for a short document, writing every step would
    cost more than its whole store (bench/ingest_pipeline.py). The documents page polls once a
    second, so it misses nothing it would show; the store sets 100% with the chunks.
    """

    def __init__(self, document_id: int, seconds: dict[str, float]):
        self.document_id, self.seconds = document_id, seconds
        self.written_at = time.monotonic()  # the status update that started processing

    def show(self, progress: float) -> None:
        if time.monotonic() - self.written_at < PROGRESS_WRITE_SECONDS:
            return
        with timed(self.seconds, "progress"):
            _set_progress(self.document_id, progress)
        self.written_at = time.monotonic()


@contextmanager
def local_copy(document: Document):
    """A local path of the stored file (copied to a temporary file for remote storages)."""
    try:
        yield Path(document.file.path)
        return
    except NotImplementedError:
        pass
    suffix = Path(document.original_filename).suffix
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp, document.file.open("rb") as source:
        shutil.copyfileobj(source, tmp)
        tmp.flush()
        yield Path(tmp.name)


# Plain text this small is read in the worker's own process: decoding it cannot hang, nest or
# balloon, while forking the worker (its embedding model loaded) costs ~20 ms, a hundred times
# the parse of an abstract (bench/ingest_pipeline.py). Every other file goes to the guarded child.
INLINE_TEXT_MAX_BYTES = 256 * 1024


def parse_document(*, document: Document, path: Path) -> list[Section]:
    """The file's sections: small plain text in this process, anything else in a guarded child."""
    kind = detect_kind(path, document.original_filename, document.content_type)
    if kind == "text" and path.stat().st_size <= INLINE_TEXT_MAX_BYTES:
        return parse_file(path, kind, max_pages=settings.PARSE_MAX_PAGES,
                          max_characters=settings.PARSE_MAX_CHARACTERS)
    return parse_file_guarded(path=path, filename=document.original_filename, content_type=document.content_type)


def document_ingest(*, document_id: int, only_pending: bool = False) -> Document | None:
    """Parse, chunk, embed and store one document; any failure ends in ``failed`` with a reason.

    Safe to run twice, or concurrently: the chunks are replaced in one transaction. ``only_pending``
    (the task's way) ingests only a document still queued or processing: a message delivered again
    after the document finished or was cancelled does nothing. A lost database connection is raised,
    not recorded, so that the task retries. Logs one line per stored document with the seconds of each
    stage (bench/ingest_pipeline.py reads it).
    """
    started = time.perf_counter()
    document = Document.objects.filter(pk=document_id).select_related("collection").first()
    if document is None:
        logger.info("document %s no longer exists; nothing to ingest", document_id)
        return None
    claim = Document.objects.filter(pk=document_id)
    if only_pending:
        claim = claim.filter(status__in=PENDING)
    if not claim.update(
        status=Document.Status.PROCESSING, progress=0.0, error="", error_detail="", attempts=F("attempts") + 1,
        started_at=timezone.now(), finished_at=None, updated_at=timezone.now(),
    ):
        logger.info("document %s is %s; nothing to ingest", document_id, document.status)
        return document
    seconds: dict[str, float] = {}
    progress = _ProgressBar(document_id, seconds)
    beating = Heartbeat(document_id)
    try:
        with timed(seconds, "parse"), local_copy(document) as path:
            sections = parse_document(document=document, path=path)
        progress.show(0.05)
        with timed(seconds, "chunk"):
            drafts = chunk_sections(sections)
        if not drafts:
            raise EmptyDocument(EmptyDocument.NO_TEXT)
        backend = embeddings.get_backend()
        embeddings.check_dimension(backend)
        total = len(drafts)
        shown_before = seconds.get("progress", 0.0)
        with timed(seconds, "embed"):
            vectors = embeddings.embed_in_batches(
                backend,
                [draft.embedding_text for draft in drafts],
                # Embedding is most of the time: it drives the progress bar from 5% to 95%.
                on_batch=lambda done, _total: progress.show(0.05 + 0.9 * done / total),
            )
        seconds["embed"] -= seconds.get("progress", 0.0) - shown_before  # the model's time alone
        with timed(seconds, "store"):
            store_chunks(document=document, drafts=drafts, vectors=vectors, model_name=backend.model_name)
    except IngestCancelled as why:
        logger.info("ingestion of document %s stopped without storing: %s", document_id, why)
    except IngestError as error:
        logger.info("ingestion of document %s failed: %s (%s)", document_id, error, error.detail or "no detail")
        _mark_failed(document_id, str(error), detail=error.detail)
    except SoftTimeLimitExceeded:
        _mark_failed(document_id, ProcessingTimeLimit.default_message, detail="Celery's soft time limit")
    except (OperationalError, InterfaceError, psycopg.OperationalError):
        raise  # the database went away: nothing can be recorded now; the task retries, the sweeper backs it up
    except Exception as error:
        logger.exception("ingestion of document %s failed unexpectedly", document_id)
        _mark_failed(document_id, UnexpectedFailure.default_message,
                     detail=f"{error.__class__.__name__}: {error} (the traceback is in the worker log)")
    else:
        logger.info(
            "document %s stored: chunks=%d seconds=%.4f %s", document_id, total, time.perf_counter() - started,
            " ".join(f"{stage}={value:.4f}" for stage, value in seconds.items()),
        )
    finally:
        beating.stop()
    return Document.objects.filter(pk=document_id).first()


@contextmanager
def timed(seconds: dict[str, float], stage: str):
    """Add the wall time the block takes to ``seconds[stage]`` (cheap: two clock reads)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - started


def _mark_failed(document_id: int, reason: str, *, detail: str = "") -> None:
    # Never over a cancellation (or a finished concurrent run): only the run that still owns it fails it.
    Document.objects.filter(pk=document_id, status=Document.Status.PROCESSING).update(
        status=Document.Status.FAILED, error=reason, error_detail=detail[:10_000], progress=0.0,
        finished_at=timezone.now(), updated_at=timezone.now(),
    )


COPY_COLUMNS = (
    ("document_id", "int8"),
    ("collection_id", "int8"),
    ("ordinal", "int4"),
    ("text", "text"),
    ("page", "int4"),
    ("heading", "text"),
    ("char_start", "int4"),
    ("char_end", "int4"),
    ("token_count", "int4"),
    ("metadata", "jsonb"),
    ("embedding", "vector"),
    ("embedding_model", "varchar"),
    ("distance", "varchar"),
)


def store_chunks(
    *,
    document: Document,
    drafts: list[ChunkDraft],
    vectors: np.ndarray,
    model_name: str,
    on_stored: Callable[[], None] | None = None,
) -> None:
    """Replace the document's chunks in one transaction, writing them with binary COPY.

    COPY is the fastest way into PostgreSQL (one round trip, no per-row parsing); one
    transaction means a retried task can never leave duplicates or half a document. A document
    cancelled meanwhile is refused (``IngestCancelled``) under its row lock.
    """
    if len(drafts) != len(vectors):
        raise ValueError(f"{len(drafts)} chunks but {len(vectors)} vectors")
    with transaction.atomic():
        # The few statements around the COPY are plain SQL: the worker runs them once per document,
        # and compiling them with the ORM cost more than running them (bench/ingest_store.py).
        with connection.cursor() as cursor:
            # Lock the document's row (not its collection's): two runs of the same document store
            # one after the other, and a cancellation either came before (and is seen here) or waits
            # and then finds the document stored. The same statement reads the distance, i.e. which
            # partial HNSW index the rows join, and the collection and metadata the chunks copy as they
            # are now: an edit during the run (which moves stored chunks, migration 0005) is not undone.
            cursor.execute(
                f"SELECT d.collection_id, c.distance, d.status, d.metadata::text FROM {Document._meta.db_table} d "
                f"JOIN {Collection._meta.db_table} c ON c.id = d.collection_id WHERE d.id = %s FOR UPDATE OF d",
                [document.pk],
            )
            row = cursor.fetchone()
            if row is None:
                raise IngestCancelled("deleted while it was processed")
            collection_id, distance, status, metadata = row
            metadata = Jsonb(json.loads(metadata) if metadata else {})
            if status == Document.Status.CANCELLED:
                raise IngestCancelled("cancelled while it was processed")
            # A separate statement, so that it sees what a run we waited for committed.
            cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {Chunk._meta.db_table} WHERE document_id = %s)",
                           [document.pk])
            replacing = cursor.fetchone()[0]
        if replacing:
            # Through the ORM, which clears the citations of the old chunks; only their ids are read.
            Chunk.objects.filter(document_id=document.pk).only("pk").delete()
        copy_chunk_rows(
            (
                document.pk, collection_id, draft.ordinal, draft.text, draft.page,
                draft.heading, draft.char_start, draft.char_end, draft.token_count,
                metadata, vector, model_name, distance,
            )
            for draft, vector in zip(drafts, np.asarray(vectors, dtype=np.float32), strict=True)
        )
        Document.objects.filter(pk=document.pk).update(
            status=Document.Status.READY, progress=1.0, error="", chunk_count=len(drafts),
            finished_at=timezone.now(), updated_at=timezone.now(),
        )
        if on_stored is not None:
            on_stored()


def copy_chunk_rows(rows) -> int:
    """Write chunk rows (in COPY_COLUMNS order) with binary COPY on Django's connection."""
    columns = ", ".join(name for name, _ in COPY_COLUMNS)
    with vector_cursor() as cursor:
        count = 0
        with cursor.copy(f"COPY {Chunk._meta.db_table} ({columns}) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types([pg_type for _, pg_type in COPY_COLUMNS])
            for row in rows:
                copy.write_row(row)
                count += 1
    return count
