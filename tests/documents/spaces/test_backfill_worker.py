"""Migrations through a real Celery worker, with searches running all along.

- A collection on the local MiniLM model moves to a 256-dimensional hashing space and back (rollback) while a
  thread searches it in a loop: not one error, not one empty answer, and the answers change with the switch.
- A document uploaded in the middle of a migration is ingested into both spaces (the backfill does not embed
  it again).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.db import connections

from documents import services
from documents.chunking import embedding_text
from documents.models import Chunk, Collection, Document, EmbeddingSpace, SpaceMigration
from documents.search import search
from documents.spaces import backend_for, migration, storage, tasks
from tests.documents.spaces.helpers import add_documents, chunk_ids, evaluate, vectors_of
from tests.documents.spaces.test_locks import wait_for_state

QUERIES = ["magma eruption crater", "sourdough starter loaf", "rook castling endgame", "ice moraine meltwater"]


class QueryLoop:
    """A thread searching the collection (vector arm alone: the keyword arm cannot hide an empty one) until
    stopped; it counts errors, empty answers, and keeps each answer's chunk ids."""

    def __init__(self, user):
        self.user = user
        self.errors: list[str] = []
        self.empty = 0
        self.answers: list[tuple[str, tuple[int, ...], float]] = []  # (query, chunk ids, when it was asked)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> QueryLoop:
        self._thread.start()
        return self

    def asked_since(self, moment: float, timeout: float = 60) -> None:
        """Wait until the first query has been asked (and answered) since ``moment`` (time.monotonic())."""
        deadline = time.monotonic() + timeout
        while not any(query == QUERIES[0] and asked > moment for query, _, asked in self.answers):
            assert time.monotonic() < deadline, "no search answered since"
            time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        self._stopped.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stopped.is_set():
                for query in QUERIES:
                    started = time.monotonic()
                    try:
                        hits = search(user=self.user, query=query, k=5, mode="vector")
                    except Exception as error:  # counted: the assertion names it
                        self.errors.append(f"{type(error).__name__}: {error}")
                        continue
                    self.empty += not hits
                    self.answers.append((query, tuple(hit.chunk_id for hit in hits), started))
        finally:
            connections.close_all()


@pytest.fixture
def minilm_collection(user):
    """A collection on the local MiniLM model's space (the tests' default is hashing), with its documents."""
    space = migration.space_add(name="minilm", backend="local")
    storage.create_index(space, "cosine")
    EmbeddingSpace.objects.filter(pk=space.pk).update(status=EmbeddingSpace.Status.ACTIVE)
    collection = Collection.objects.create(owner=user, name="Field notes", active_space=space)
    add_documents(user, collection, per_topic=3)
    return collection


def test_a_migration_to_another_model_and_back_never_fails_or_empties_a_search(
    celery_worker, user, minilm_collection, settings
):
    settings.SPACE_BACKFILL_BATCH = 8
    collection = minilm_collection
    source = collection.active_space
    target = migration.space_add(name="hashing-256", backend="hashing", dimensions=256)
    with QueryLoop(user) as loop:
        loop.asked_since(0)  # answers from the MiniLM space first
        started = migration.migration_start(collection=collection, target=target, user=user)
        ready = wait_for_state(started, SpaceMigration.State.READY)
        evaluate(ready)
        migration.switch(collection=collection, user=user)
        loop.asked_since(time.monotonic())  # answers from the hashing space
        migration.rollback(collection=collection, user=user)
        loop.asked_since(time.monotonic())  # MiniLM's again (a round takes a while on a loaded machine)
    assert loop.errors == []
    assert loop.empty == 0 and len(loop.answers) >= 3  # before, between and after (asked_since waited for each)
    collection.refresh_from_db()
    assert collection.active_space == source and collection.previous_space == target
    # The loop saw both spaces' answers: MiniLM's before and after, hashing's in between.
    first = [ids for query, ids, _ in loop.answers if query == QUERIES[0]]
    assert first[0] == first[-1] and any(ids != first[0] for ids in first)
    assert sorted(vectors_of(target, collection)) == chunk_ids(collection)


def test_a_document_uploaded_mid_migration_is_ingested_into_both_spaces(
    celery_worker, user, collection, settings, monkeypatch
):
    settings.SPACE_BACKFILL_BATCH = 4
    monkeypatch.setattr(tasks, "SLICE_SECONDS", 0.0)  # a batch per task: the upload's ingestion comes in between
    add_documents(user, collection, per_topic=2)
    before = len(chunk_ids(collection))
    target = migration.space_add(name="hashing-256", backend="hashing", dimensions=256)
    started = migration.migration_start(collection=collection, target=target)
    text = "# Mooring\n\n## Knots\n\nThe halyard and the keel of the sailing boat, moored at the regatta. " * 30
    document = services.document_create(
        owner=user, collection=collection, filename="mooring.md", file=ContentFile(text.encode(), name="mooring.md")
    )
    wait_for_state(started, SpaceMigration.State.READY)
    for _ in range(600):
        document.refresh_from_db()
        if document.status in (Document.Status.READY, Document.Status.FAILED):
            break
        time.sleep(0.1)
    assert document.status == Document.Status.READY, document.error
    chunks = list(Chunk.objects.filter(document=document).order_by("id"))
    assert len(chunks) >= 2
    active, new = vectors_of(collection.active_space, collection), vectors_of(target, collection)
    for space, stored in ((collection.active_space, active), (target, new)):
        expected = backend_for(space).embed_documents([embedding_text(c.heading, c.text) for c in chunks])
        np.testing.assert_allclose(np.stack([stored[c.pk] for c in chunks]), expected, atol=1e-6)
    started.refresh_from_db()
    assert started.chunks_done == before  # the backfill found the upload's chunks already written
    assert sorted(new) == chunk_ids(collection)
