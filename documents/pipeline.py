"""The ingestion pipeline of one document: parse → chunk → embed → store, with its heartbeat and progress."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psycopg
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.db.models import F
from django.utils import timezone

from documents import embeddings
from documents.chunking import chunk_sections
from documents.exceptions import EmptyDocument, IngestError, ProcessingTimeLimit, UnexpectedFailure
from documents.models import Collection, Document, EmbeddingSpace
from documents.parsing import Section, detect_kind, parse_file, parse_file_guarded
from documents.selectors import PENDING
from documents.spaces import backend_for
from documents.store import IngestCancelled, SpacesChanged, store_chunks

logger = logging.getLogger(__name__)


def _set_progress(document_id: int, progress: float, **fields: object) -> None:
    """Show progress; the same statement finds out whether the run is still wanted."""
    # updated_at is also the run's heartbeat (see Heartbeat).
    written = Document.objects.filter(pk=document_id, status=Document.Status.PROCESSING).update(
        progress=progress, updated_at=timezone.now(), **fields
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


PROGRESS_WRITE_SECONDS = 1.0


class _ProgressBar:
    """Writes a document's progress for the page's bar, at most once per PROGRESS_WRITE_SECONDS.

    Each write is a commit, i.e. a disk flush: for a short document, writing every step would
    cost more than its whole store (bench/ingest_pipeline.py). The documents page polls once a
    second, so it misses nothing it would show; the store sets 100% with the chunks. Every write
    carries the whole state (stage, pages, chunks embedded of total), so none is lost to the throttle.
    """

    def __init__(self, document_id: int, seconds: dict[str, float]):
        self.document_id, self.seconds = document_id, seconds
        self.written_at = time.monotonic()  # the status update that started processing
        self.state: dict[str, object] = {}

    def stage(self, stage: str, **fields: object) -> None:
        """A new stage starts (its time is the rate's origin for the page's estimate)."""
        self.state.update(stage=stage, stage_started_at=timezone.now(), **fields)

    def show(self, progress: float, **fields: object) -> None:
        self.state.update(fields)
        if time.monotonic() - self.written_at < PROGRESS_WRITE_SECONDS:
            return
        with timed(self.seconds, "progress"):
            _set_progress(self.document_id, progress, **self.state)
        self.written_at = time.monotonic()


@contextmanager
def local_copy(document: Document) -> Iterator[Path]:
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
        stage=Document.Stage.PARSING, stage_started_at=timezone.now(), page_count=None, chunks_total=0,
        chunks_embedded=0,
    ):
        logger.info("document %s is %s; nothing to ingest", document_id, document.status)
        return document
    seconds: dict[str, float] = {}
    progress = _ProgressBar(document_id, seconds)
    beating = Heartbeat(document_id)
    try:
        with timed(seconds, "parse"), local_copy(document) as path:
            sections = parse_document(document=document, path=path)
        pages = len({section.page for section in sections if section.page is not None}) or None
        with timed(seconds, "chunk"):
            drafts = chunk_sections(sections)
        if not drafts:
            raise EmptyDocument(EmptyDocument.NO_TEXT)
        total = len(drafts)
        # The collection's active space, and its target space during a migration: the chunks go to both.
        collection = Collection.objects.select_related("active_space", "target_space").get(pk=document.collection_id)
        spaces = [space for space in (collection.active_space, collection.target_space) if space is not None]
        progress.stage(Document.Stage.EMBEDDING, page_count=pages, chunks_total=total * len(spaces),
                       chunks_embedded=0)
        progress.show(0.05)
        shown_before = seconds.get("progress", 0.0)
        texts = [draft.embedding_text for draft in drafts]
        with timed(seconds, "embed"):
            vectors = _embed(texts, spaces, progress)
        seconds["embed"] -= seconds.get("progress", 0.0) - shown_before  # the model's time alone
        progress.stage(Document.Stage.STORING)
        progress.show(0.05 + 0.9)  # all embedded, as the last batch wrote it
        with timed(seconds, "store"):
            for attempt in range(STORE_ATTEMPTS):
                try:
                    store_chunks(document=document, drafts=drafts, vectors=vectors, page_count=pages)
                    break
                except SpacesChanged as changed:
                    # A migration started (or a switch happened) while this run embedded: embed for it too.
                    if attempt == STORE_ATTEMPTS - 1:
                        raise
                    vectors.update(_embed(texts, list(EmbeddingSpace.objects.filter(pk__in=changed.missing)), None))
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


# Storing finds the collection's spaces changed (a migration started, a switch) at most this often in a row.
STORE_ATTEMPTS = 3


def _embed(texts: list[str], spaces: list[EmbeddingSpace], progress: _ProgressBar | None) -> dict[int, np.ndarray]:
    """The texts' vectors in each space (by space id), each made by that space's own backend."""
    vectors: dict[int, np.ndarray] = {}
    grand_total, done_before = len(texts) * len(spaces), 0
    for space in spaces:
        backend = backend_for(space)
        embeddings.check_dimension(backend, expected=space.dimensions)

        def show(done: int, _total: int, before: int = done_before) -> None:
            # Embedding is most of the time: it drives the progress bar from 5% to 95%.
            if progress is not None:
                progress.show(0.05 + 0.9 * (before + done) / grand_total, chunks_embedded=before + done)

        vectors[space.pk] = embeddings.embed_in_batches(backend, texts, on_batch=show)
        done_before += len(texts)
    return vectors


@contextmanager
def timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Add the wall time the block takes to ``seconds[stage]`` (cheap: two clock reads)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - started


def _mark_failed(document_id: int, reason: str, *, detail: str = "") -> None:
    # Never over a cancellation (or a finished concurrent run): only the run that still owns it fails it.
    Document.objects.filter(pk=document_id, status=Document.Status.PROCESSING).update(
        status=Document.Status.FAILED, error=reason, error_detail=detail[:10_000], progress=0.0, stage="",
        finished_at=timezone.now(), updated_at=timezone.now(),
    )
