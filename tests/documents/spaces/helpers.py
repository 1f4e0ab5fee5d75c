"""What the embedding-space tests share: documents with headings, the vectors a space holds, the gate's input."""

from __future__ import annotations

import uuid
from datetime import timedelta

import numpy as np
from django.db import connection
from django.utils import timezone

from documents.chunking import embedding_text
from documents.db import vector_cursor
from documents.models import Chunk, ChunkVector, Document, EmbeddingSpace, SpaceMigration
from documents.spaces import backend_for, storage
from documents.spaces.vectors import write_vectors
from tests.documents.topics import TOPICS


def add_documents(user, collection, *, per_topic: int = 1, parts: int = 6) -> list:
    """Documents on distinct topics stored as ingestion stores them: chunks with heading paths, and their vectors
    in the collection's active space (embedding the heading and the text, as the pipeline does)."""
    space = collection.active_space
    backend = backend_for(space)
    documents = []
    for topic, words in TOPICS.items():
        vocabulary = words.split()
        for copy in range(per_topic):
            document = Document.objects.create(
                owner=user,
                collection=collection,
                title=f"{topic}-{copy}",
                sha256=uuid.uuid4().hex * 2,
                status=Document.Status.READY,
                chunk_count=parts,
            )
            chunks = [
                Chunk.objects.create(
                    document=document,
                    collection=collection,
                    ordinal=part,
                    heading=f"{topic.title()} > Part {part}",
                    text=" ".join(
                        f"The {word} of the {topic} matters in note {copy}.{part}."
                        for word in vocabulary[part % 3 :: 3]
                    ),
                )
                for part in range(parts)
            ]
            vectors = backend.embed_documents([embedding_text(chunk.heading, chunk.text) for chunk in chunks])
            write_vectors(
                space=space,
                rows=[
                    (c.pk, collection.pk, document.pk, collection.distance, v)
                    for c, v in zip(chunks, vectors, strict=True)
                ],
            )
            documents.append(document)
    return documents


def add_markdown(user, collection, name: str, text: str):
    """``text`` uploaded as ``name``.md and ingested here (its chunks keep their heading paths)."""
    from django.core.files.base import ContentFile

    from documents import pipeline, services

    document = services.document_create(
        owner=user,
        collection=collection,
        file=ContentFile(text.encode(), name=f"{name}.md"),
        filename=f"{name}.md",
        enqueue=False,
    )
    return pipeline.document_ingest(document_id=document.pk)


def vectors_of(space: EmbeddingSpace, collection) -> dict[int, np.ndarray]:
    """{chunk id: vector} of the collection's chunks in ``space``."""
    with vector_cursor() as cursor:
        cursor.execute(
            f"SELECT chunk_id, embedding FROM {ChunkVector._meta.db_table} WHERE space_id = %s AND collection_id = %s",
            [space.pk, collection.pk],
        )
        return {chunk_id: np.asarray(vector.to_numpy(), dtype=np.float32) for chunk_id, vector in cursor.fetchall()}


def chunk_ids(collection) -> list[int]:
    return list(Chunk.objects.filter(collection=collection).order_by("id").values_list("id", flat=True))


def index_state(space: EmbeddingSpace, distance: str = "cosine") -> bool | None:
    """Whether the space's index of ``distance`` is valid (None: there is none)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s",
            [storage.index_name(space, distance)],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def passing_evaluation(migration: SpaceMigration, **changes) -> dict:
    """An evaluation the gate accepts (documents.spaces.quality writes these keys), with ``changes``."""
    evaluation = {
        "overlap_at_10": 0.8,
        "recall_at_10": 0.97,
        "ndcg_at_10_active": None,
        "ndcg_at_10_target": None,
        "recall_at_100_active": None,
        "recall_at_100_target": None,
        "hnsw_recall_mean": 0.99,
        "hnsw_recall_p10": 0.95,
        "hnsw_recall_min": 0.9,
        "queries": 50,
        "labelled": False,
        "coverage": 1.0,
        "evaluated_at": ((migration.backfilled_at or timezone.now()) + timedelta(seconds=1)).isoformat(),
    }
    evaluation.update(changes)
    return evaluation


def evaluate(migration: SpaceMigration, **changes) -> SpaceMigration:
    migration.refresh_from_db()
    migration.evaluation = passing_evaluation(migration, **changes)
    migration.save(update_fields=["evaluation"])
    return migration
