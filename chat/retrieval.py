"""The one place that returns chunks: permission-filtered vector, keyword and hybrid search.

Access control lives inside the SQL (a subquery of the collections the user may read), never
in Python after the fact, so no code path can forget it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import date

import numpy as np
from django.conf import settings
from django.db import transaction

from documents import embeddings
from documents.db import vector_cursor

MODES = ("vector", "keyword", "hybrid")
# Reciprocal rank fusion constant (Cormack et al. 2009): 60 damps the weight of the top ranks.
RRF_K = 60


@dataclass(frozen=True)
class Filters:
    collections: tuple[int, ...] = ()
    documents: tuple[int, ...] = ()
    content_types: tuple[str, ...] = ()
    metadata: dict = field(default_factory=dict)  # JSON containment on the chunk's metadata
    created_after: date | None = None
    created_before: date | None = None


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    document_id: int
    document_title: str
    page: int | None
    heading: str
    text: str
    score: float
    # Whether a signal says the passage is about the query: cosine similarity above
    # RETRIEVAL_MIN_SIMILARITY, or a full-text match. Nearest neighbours always exist; this
    # is what lets the chat say "nothing relevant" instead of answering from noise.
    relevant: bool = True


def _where(user, filters: Filters, model_name: str | None) -> tuple[str, list]:
    # Collections the user may read: owned, or shared with them as a member.
    clauses = [
        "c.collection_id IN (SELECT id FROM documents_collection WHERE owner_id = %s"
        " UNION SELECT collection_id FROM documents_collection_members WHERE user_id = %s)"
    ]
    params: list = [user.pk, user.pk]
    if model_name is not None:
        # Only vectors from the model that embeds the query are comparable with it.
        clauses.append("c.embedding_model = %s")
        params.append(model_name)
    if filters.collections:
        clauses.append("c.collection_id = ANY(%s)")
        params.append(list(filters.collections))
    if filters.documents:
        clauses.append("c.document_id = ANY(%s)")
        params.append(list(filters.documents))
    if filters.metadata:
        clauses.append("c.metadata @> %s::jsonb")
        params.append(json.dumps(filters.metadata))
    if filters.content_types or filters.created_after or filters.created_before:
        sub = ["d2.id = c.document_id"]
        if filters.content_types:
            sub.append("d2.content_type = ANY(%s)")
            params.append(list(filters.content_types))
        if filters.created_after:
            sub.append("d2.created_at >= %s")
            params.append(filters.created_after)
        if filters.created_before:
            sub.append("d2.created_at < %s")
            params.append(filters.created_before)
        clauses.append(f"EXISTS (SELECT 1 FROM documents_document d2 WHERE {' AND '.join(sub)})")
    return " AND ".join(clauses), params


def search(
    *, user, query: str, k: int = 10, filters: Filters | None = None, mode: str = "hybrid",
    candidates: int | None = None,
) -> list[Hit]:
    """The ``k`` best chunks for ``query`` among those ``user`` may read."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    query = (query or "").strip()[:2000]
    if not query or not user.is_authenticated or k <= 0:
        return []
    filters = filters or Filters()
    k = min(k, 1000)
    pool = max(candidates or settings.RETRIEVAL_CANDIDATES, k)
    with transaction.atomic(), vector_cursor() as cursor:
        if mode == "vector":
            rows = _vector(cursor, user, query, filters, k)
        elif mode == "keyword":
            rows = _keyword(cursor, user, query, filters, k)
        else:
            rows = _fuse([_vector(cursor, user, query, filters, pool), _keyword(cursor, user, query, filters, pool)], k)
    return rows


# The operator of each distance (matching its partial index's opclass), and its result turned into
# a cosine similarity. Every backend's vectors are L2-normalised, so the three are comparable.
OPERATORS = {"cosine": "<=>", "l2": "<->", "ip": "<#>"}
SIMILARITY = {"cosine": "1 - {d}", "l2": "1 - {d} * {d} / 2", "ip": "-{d}"}


def _distances(cursor, user, filters: Filters) -> list[str]:
    """The distances of the collections this search covers (one, unless collections differ)."""
    sql = (
        "SELECT DISTINCT distance FROM documents_collection WHERE id IN (SELECT id FROM documents_collection"
        " WHERE owner_id = %s UNION SELECT collection_id FROM documents_collection_members WHERE user_id = %s)"
    )
    params: list = [user.pk, user.pk]
    if filters.collections:
        sql += " AND id = ANY(%s)"
        params.append(list(filters.collections))
    cursor.execute(sql, params)
    return sorted(row[0] for row in cursor.fetchall() if row[0] in OPERATORS)


def _vector(cursor, user, query: str, filters: Filters, limit: int) -> list[Hit]:
    backend = embeddings.get_backend()
    vector = np.asarray(backend.embed_query(query), dtype=np.float32)
    # SET LOCAL lasts until the end of the surrounding transaction: per query, not per session.
    # Iterative scans keep walking the HNSW graph until enough rows pass the filters.
    ef_search = min(max(settings.HNSW_EF_SEARCH, limit), 1000)
    cursor.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(ef_search)])
    cursor.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
    where, params = _where(user, filters, backend.model_name)
    hits: list[Hit] = []
    distances = _distances(cursor, user, filters)
    for distance in distances:
        operator = OPERATORS[distance]  # from a fixed table, never from input
        similarity = SIMILARITY[distance].format(d="n.distance")
        # The distance literal lets the planner pick that distance's partial HNSW index.
        # relaxed_order may return rows slightly out of order: re-sort the materialised candidates.
        cursor.execute(
            f"""
            WITH nearest AS MATERIALIZED (
                SELECT c.id, c.document_id, c.page, c.heading, c.text, c.embedding {operator} %s AS distance
                FROM documents_chunk c
                WHERE c.distance = '{distance}' AND {where}
                ORDER BY c.embedding {operator} %s
                LIMIT %s
            )
            SELECT n.id, n.document_id, d.title, n.page, n.heading, n.text, {similarity}
            FROM nearest n JOIN documents_document d ON d.id = n.document_id
            ORDER BY n.distance
            """,
            [vector, *params, vector, limit],
        )
        threshold = settings.RETRIEVAL_MIN_SIMILARITY
        hits.extend(Hit(*row, relevant=row[-1] >= threshold) for row in cursor.fetchall())
    if len(distances) > 1:  # collections with different distances: merge on cosine similarity
        hits = sorted(hits, key=lambda hit: (-hit.score, hit.chunk_id))[:limit]
    return hits


def _keyword(cursor, user, query: str, filters: Filters, limit: int) -> list[Hit]:
    where, params = _where(user, filters, None)
    # Any query term may match (OR), ranked by cover density: questions are not boolean queries.
    cursor.execute(
        f"""
        WITH q AS (
            SELECT replace(plainto_tsquery('english', %s)::text, '&', '|')::tsquery AS query
        )
        SELECT c.id, c.document_id, d.title, c.page, c.heading, c.text,
               ts_rank_cd(c.search_vector, q.query, 1) AS rank
        FROM documents_chunk c JOIN documents_document d ON d.id = c.document_id, q
        WHERE c.search_vector @@ q.query AND {where}
        ORDER BY rank DESC, c.id
        LIMIT %s
        """,
        [query, *params, limit],
    )
    return [Hit(*row) for row in cursor.fetchall()]


def _fuse(rankings: list[list[Hit]], k: int) -> list[Hit]:
    """Reciprocal rank fusion: robust to the incomparable scales of cosine and ts_rank."""
    scores: dict[int, float] = {}
    relevant: dict[int, bool] = {}
    hits: dict[int, Hit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (RRF_K + rank)
            relevant[hit.chunk_id] = relevant.get(hit.chunk_id, False) or hit.relevant
            hits.setdefault(hit.chunk_id, hit)
    best = sorted(scores, key=lambda chunk_id: (-scores[chunk_id], chunk_id))[:k]
    return [replace(hits[i], score=scores[i], relevant=relevant[i]) for i in best]
