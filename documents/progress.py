"""What the documents page says about an ingestion: percent, stage, n/m chunks, pages, time left, and
the kind of its message (error, success, warning, info) that decides its colour.

The worker writes the raw state (documents.pipeline: stage, stage_started_at, page_count, chunks_total,
chunks_embedded, progress); this module turns it into words, for the status JSON and the row template.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

from django.utils import timezone

from documents.models import Document

# Kinds of a document's message, as the page styles them (class ``message-<kind>``).
ERROR, SUCCESS, WARNING, INFO = "error", "success", "warning", "info"


class Progress(TypedDict):
    percent: int
    stage: str
    stage_label: str
    pages: int | None
    chunks_done: int
    chunks_total: int
    eta_seconds: int | None
    progress_text: str
    message_kind: str


def message_kind(document: Document) -> str:
    """Failed: error; ready: success; queued with a note (the queue was down, a worker died): warning."""
    if document.status == Document.Status.FAILED:
        return ERROR
    if document.status == Document.Status.READY:
        return SUCCESS
    if document.status in (Document.Status.QUEUED, Document.Status.PROCESSING) and document.error:
        return WARNING
    return INFO


def eta_seconds(document: Document, now: datetime | None = None) -> int | None:
    """Seconds left, from the rate measured since embedding started; None before there is a rate."""
    done, total = document.chunks_embedded, document.chunks_total
    if document.stage != Document.Stage.EMBEDDING or not done or not total or document.stage_started_at is None:
        return None
    elapsed = ((now or timezone.now()) - document.stage_started_at).total_seconds()
    if elapsed <= 0:
        return None
    # Storing takes a small fraction of embedding (bench/ingest_pipeline.py): the estimate is embedding's.
    return max(1, round((total - done) * elapsed / done))


def duration(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def describe(document: Document, now: datetime | None = None) -> Progress:
    percent = int(document.progress * 100)
    stage, label, eta = "", "", None
    parts: list[str] = []
    if document.status == Document.Status.QUEUED:
        label = "Waiting for a worker"
        parts = [label]
    elif document.status == Document.Status.PROCESSING:
        stage = document.stage or Document.Stage.PARSING
        if stage == Document.Stage.EMBEDDING and document.chunks_total:
            label = f"Embedding {document.chunks_embedded:,}/{plural(document.chunks_total, 'chunk')}"
        else:
            label = Document.Stage(stage).label + ("…" if stage != Document.Stage.EMBEDDING else "")
        parts = [label, f"{percent}%"]
        if document.page_count:
            parts.append(plural(document.page_count, "page"))
        eta = eta_seconds(document, now)
        if eta is not None:
            parts.append(f"about {duration(eta)} left")
    elif document.status == Document.Status.READY:
        percent = 100  # its chunk count has a place of its own on the page
        if document.page_count:
            parts = [plural(document.page_count, "page")]
    return Progress(
        percent=percent,
        stage=stage,
        stage_label=label,
        pages=document.page_count,
        chunks_done=document.chunks_embedded,
        chunks_total=document.chunks_total,
        eta_seconds=eta,
        progress_text=" · ".join(parts),
        message_kind=message_kind(document),
    )
