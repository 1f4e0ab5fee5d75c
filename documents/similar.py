"""Similar documents and "more like this" passages: nearest neighbours among what the caller may read.

A document's vector is the L2-normalised mean of its chunks' vectors in its collection's active embedding space
(``DocumentVector``), written with the chunks by the store and rebuilt when the collection switches spaces. Only
vectors of one space are compared: each statement names its space as a literal, so that the planner uses that
space's partial index (documents.spaces.document_index, and the chunk vectors' partition). Every statement
here decides access with ``readable_collections`` inside the SQL, and applies its filters in the same statement
as the vector ranking, with pgvector's iterative index scan: the HNSW scan goes on past ``ef_search`` until ``k``
rows pass the filters, so a narrow filter still fills the list.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.shortcuts import get_object_or_404

from core.http import parse_id
from core.text import without_surrogates
from documents.db import vector_cursor
from documents.models import Chunk, ChunkVector, Collection, Document, DocumentVector, EmbeddingSpace
from documents.search.filters import Filters, covered_collections
from documents.search.sql import (
    CHUNK,
    COLLECTION,
    DOCUMENT,
    OPERATORS,
    SCOPE,
    SIMILARITY,
    _table,
    hnsw_settings,
    readable_collections,
)
from documents.selectors import _kind_q
from documents.spaces.document_index import create_document_index, document_expression
from documents.spaces.storage import vector_expression

VECTOR_TABLE = DocumentVector._meta.db_table
VECTOR = _table(DocumentVector)
CHUNK_VECTOR = _table(ChunkVector)
SPACE = _table(EmbeddingSpace)

# At or above this cosine similarity two documents say the same thing (a re-saved or re-exported copy):
# flagged, not hidden — the reader decides which to keep.
NEAR_DUPLICATE = 0.98
MAX_K = 50


def alike(score: float) -> bool:
    """Whether a cosine similarity says two texts are alike at all: above RETRIEVAL_MIN_SIMILARITY, the floor below
    which a passage is not relevant to a question either. Nearest neighbours always exist; below it they are
    unrelated (an HR policy listed beside a Wikipedia article at 0.00)."""
    return score > settings.RETRIEVAL_MIN_SIMILARITY


@dataclass(frozen=True)
class SimilarDocument:
    document_id: int
    title: str
    collection: str
    score: float
    near_duplicate: bool


@dataclass(frozen=True)
class SimilarPassage:
    chunk_id: int
    document_id: int
    document_title: str
    collection: str
    page: int | None
    heading: str
    text: str
    score: float


@dataclass(frozen=True)
class SimilarFilters:
    """What similar documents are narrowed to: a collection (id or name), a file type (the library's kinds), dates."""

    collection: str = ""
    kind: str = ""
    created_after: date | None = None
    created_before: date | None = None


def document_vector_write(
    *,
    document_id: int,
    collection_id: int,
    vectors: np.ndarray,
    model_name: str = "",
    space_id: int | None = None,
) -> None:
    """Store the document's vector from its chunks' ``vectors`` (in the caller's transaction: the store's).

    ``vectors`` are the chunks' vectors in the space ``space_id`` (default: the collection's active space, read
    in the same statement that checks the space's document index). ``model_name`` is no longer needed (the
    space says which model made them); kept so that older callers still work. The first document of a space
    creates the space's index (documents.spaces.document_index).
    """
    mean = np.asarray(vectors, dtype=np.float32).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    with vector_cursor() as cursor:
        if not np.isfinite(norm) or norm == 0.0:  # nothing to compare with (a cosine of zero is undefined)
            cursor.execute(f"DELETE FROM {VECTOR} WHERE document_id = %s", [document_id])
            return
        cursor.execute(
            f"SELECT s.id, s.dimensions, to_regclass(%s || s.id || '_hnsw') IS NOT NULL FROM {SPACE} s "
            f"WHERE s.id = coalesce(%s, (SELECT g.active_space_id FROM {COLLECTION} g WHERE g.id = %s))",
            [f"{VECTOR_TABLE}_s", space_id, collection_id],
        )
        row = cursor.fetchone()
        if row is None:
            raise ValueError(f"collection {collection_id} has no embedding space")
        space, dimensions, indexed = row
        if mean.shape[0] != dimensions:
            raise ValueError(f"{mean.shape[0]}-dimensional vectors for space {space} of {dimensions} dimensions")
        if not indexed:  # before this transaction writes a row of the table (see create_document_index)
            create_document_index(EmbeddingSpace(pk=space, dimensions=dimensions))
        cursor.execute(
            f"INSERT INTO {VECTOR} (document_id, collection_id, space_id, embedding) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (document_id) DO UPDATE SET collection_id = EXCLUDED.collection_id, "
            "space_id = EXCLUDED.space_id, embedding = EXCLUDED.embedding",
            [document_id, collection_id, space, (mean / norm).astype(np.float32)],
        )


def document_vectors_rebuild(*, collection: Collection, space: EmbeddingSpace) -> int:
    """Recompute every document vector of ``collection`` from its chunk vectors in ``space``; how many were written.

    For a switch of spaces (in the switch's transaction): one set-based statement reads the space's partition
    of the chunk vectors (``l2_normalize(avg(...))`` per document) and upserts, and the collection's documents
    with no vector in ``space`` lose their old one (a vector of another space is never compared with it).
    Creates the space's document index when it has none.
    """
    expression = vector_expression(space, "v.embedding")
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {VECTOR} (document_id, collection_id, space_id, embedding)
            SELECT m.document_id, %s, {int(space.pk)}, l2_normalize(m.mean)::vector FROM (
                SELECT v.document_id, avg({expression}) AS mean FROM {CHUNK_VECTOR} v
                WHERE v.space_id = {int(space.pk)} AND v.collection_id = %s GROUP BY v.document_id
            ) m
            WHERE vector_norm(m.mean) > 0
            ON CONFLICT (document_id) DO UPDATE SET collection_id = EXCLUDED.collection_id,
                space_id = EXCLUDED.space_id, embedding = EXCLUDED.embedding
            """,
            [collection.pk, collection.pk],
        )
        written = cursor.rowcount
        cursor.execute(
            f"DELETE FROM {VECTOR} WHERE collection_id = %s AND space_id <> {int(space.pk)}", [collection.pk]
        )
    create_document_index(space)
    return written


# pgvector's iterative scan, as SET LOCAL (nothing outlives the transaction), with ef_search (a parameter).
ITERATIVE = hnsw_settings("%s")


def similar_documents(
    *,
    user: Any,
    document: Document,
    k: int = 5,
    filters: SimilarFilters | None = None,
) -> list[SimilarDocument]:
    """The ``k`` documents ``user`` may read that are nearest ``document`` (never itself), best first.

    ``document`` must be one the caller may read (documents.selectors.document_for_user). Near-duplicates
    (the same file, or similarity ≥ NEAR_DUPLICATE) are flagged; documents not ``alike`` are left out. Empty while
    it has no vector (not ready).
    """
    filters = filters or SimilarFilters()
    k = max(1, min(k, MAX_K))
    covered, covered_params = covered_collections(user, Filters(collection=filters.collection), "g")
    # The covered collections' ids go into a transaction-local setting the ranking filters on (SCOPE): the planner
    # sees them, so a reader of a small share of the documents gets the collection index and an exact sort
    # rather than an HNSW scan walking on past about a hundred rows for each it keeps (bench/similar_scale.py).
    clauses, params = [f"v.collection_id = ANY({SCOPE})"], []
    if filters.kind:
        kind_sql, kind_params = Document.objects.filter(_kind_q(filters.kind)).values("id").query.sql_with_params()
        clauses.append(f"v.document_id IN ({kind_sql})")
        params += list(kind_params)
    dates = []
    if filters.created_after:
        dates.append("d.created_at >= %s")
        params.append(filters.created_after)
    if filters.created_before:
        dates.append("d.created_at < %s")
        params.append(filters.created_before)
    if dates:  # the document's row is read only for them
        clauses.append(f"EXISTS (SELECT 1 FROM {DOCUMENT} d WHERE d.id = v.document_id AND {' AND '.join(dates)})")
    if document.status != Document.Status.READY:
        return []
    with transaction.atomic(), vector_cursor() as cursor:
        cursor.execute(
            f"SELECT {ITERATIVE}, set_config('rag.collections', (SELECT coalesce(array_agg(g.id)::text, '{{}}') "
            f"FROM {COLLECTION} g WHERE {covered}), true), v.space_id, s.dimensions, v.embedding "
            f"FROM {VECTOR} v JOIN {SPACE} s ON s.id = v.space_id WHERE v.document_id = %s",
            [str(max(40, 2 * k)), *covered_params, document.pk],
        )
        row = cursor.fetchone()
        if row is None:
            return []
        _, _, _, space, dimensions, vector = row
        # Only the vectors of the document's own space, through that space's partial index: its predicate and
        # expression written as literals, so that the planner can match them.
        expression = document_expression(dimensions, "v.embedding")
        cursor.execute(
            f"""
            WITH nearest AS MATERIALIZED (
                SELECT v.document_id, {expression} <=> %s::vector({int(dimensions)}) AS gap
                FROM {VECTOR} v
                WHERE v.space_id = {int(space)} AND v.document_id <> %s AND {" AND ".join(clauses)}
                ORDER BY gap
                LIMIT %s
            )
            SELECT n.document_id, d.title, g.name, 1 - n.gap, d.sha256 = %s
            FROM nearest n JOIN {DOCUMENT} d ON d.id = n.document_id JOIN {COLLECTION} g ON g.id = d.collection_id
            ORDER BY n.gap + 0, n.document_id
            """,
            [vector, document.pk, *params, k, document.sha256],
        )
        return [
            SimilarDocument(
                document_id=pk,
                title=title,
                collection=collection,
                score=float(score),
                near_duplicate=bool(same_file) or score >= NEAR_DUPLICATE,
            )
            for pk, title, collection, score, same_file in cursor.fetchall()
            if alike(score)
        ]


def similar_passages(*, user: Any, chunk: Chunk, k: int = 5) -> list[SimilarPassage]:
    """The ``k`` passages of *other* documents ``user`` may read that are nearest ``chunk``, best first (only those
    ``alike``).

    ``chunk`` must be one the caller may read. Its vector is the one in its collection's active space; the
    passages compared with it are those of the readable collections searching the same space, found in that
    space's partition through the index of each distance they use, as retrieval does, then merged by similarity.
    """
    k = max(1, min(k, MAX_K))
    readable, readable_params = readable_collections(user.pk)
    # The readable collections on the chunk's space (alias g; s is the space).
    same_space = f"FROM {COLLECTION} g WHERE g.id IN ({readable}) AND g.active_space_id = s.id"
    found: list[SimilarPassage] = []
    with transaction.atomic(), vector_cursor() as cursor:
        cursor.execute(
            f"SELECT {ITERATIVE}, set_config('rag.collections', (SELECT coalesce(array_agg(g.id)::text, '{{}}') "
            f"{same_space}), true), s.id, s.dimensions, v.embedding, array(SELECT DISTINCT g.distance {same_space}) "
            f"FROM {CHUNK} c JOIN {COLLECTION} o ON o.id = c.collection_id JOIN {SPACE} s ON s.id = o.active_space_id "
            f"JOIN {CHUNK_VECTOR} v ON v.space_id = s.id AND v.chunk_id = c.id WHERE c.id = %s",
            [str(max(40, 2 * k)), *readable_params, *readable_params, chunk.pk],
        )
        row = cursor.fetchone()
        if row is None:
            return []
        _, _, _, space, dimensions, vector, distances = row
        expression = document_expression(dimensions, "v.embedding")
        for distance in sorted(set(distances) & set(OPERATORS)):
            operator, similarity = OPERATORS[distance], SIMILARITY[distance].format(d="n.gap")
            cursor.execute(
                f"""
                WITH nearest AS MATERIALIZED (
                    SELECT v.chunk_id, v.document_id, {expression} {operator} %s::vector({int(dimensions)}) AS gap
                    FROM {CHUNK_VECTOR} v
                    WHERE v.space_id = {int(space)} AND v.distance = '{distance}'
                      AND v.collection_id = ANY({SCOPE}) AND v.document_id <> %s
                    ORDER BY gap
                    LIMIT %s
                )
                SELECT n.chunk_id, n.document_id, d.title, g.name, c.page, c.heading, c.text, {similarity}
                FROM nearest n JOIN {CHUNK} c ON c.id = n.chunk_id JOIN {DOCUMENT} d ON d.id = n.document_id
                JOIN {COLLECTION} g ON g.id = d.collection_id
                ORDER BY n.gap + 0, n.chunk_id
                """,
                [vector, chunk.document_id, k],
            )
            found += [
                SimilarPassage(
                    chunk_id=pk,
                    document_id=document_id,
                    document_title=title,
                    collection=collection,
                    page=page,
                    heading=heading,
                    text=text,
                    score=float(score),
                )
                for pk, document_id, title, collection, page, heading, text, score in cursor.fetchall()
                if alike(score)
            ]
    found.sort(key=lambda passage: (-passage.score, passage.chunk_id))
    return found[:k]


def chunk_for_user(user: Any, pk: int) -> Chunk:
    """The chunk ``pk`` if ``user`` may read its document (the collections ``visible_to`` them); else Http404."""
    readable = Chunk.objects.filter(collection__in=Collection.objects.visible_to(user)).select_related("document")
    return get_object_or_404(readable, pk=pk)


def readable_collection_exists(*, user: Any, reference: str) -> bool:
    """Whether ``user`` may read a collection of that id or name (a filter naming none is a mistake, not "nothing")."""
    storable = "\x00" not in reference and without_surrogates(reference) == reference
    match = Q(name=reference) if storable else Q(pk__in=[])
    if (pk := parse_id(reference)) is not None:
        match |= Q(pk=pk)
    return Collection.objects.visible_to(user).filter(match).exists()
