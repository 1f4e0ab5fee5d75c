"""The one place that returns chunks: permission-filtered vector, keyword and hybrid search.

Access control lives inside the SQL (sql.readable_collections, in the search's first statement), never
in Python after the fact, so no code path can forget it. The statements come from ``sql``, their
predicates from ``filters``; this module sends them (one round trip as a rule) and fuses the arms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper

from core.db import server_bound_cursor
from core.text import without_surrogates
from documents.db import vector_connection
from documents.models import EmbeddingSpace
from documents.search import sql, tuning
from documents.search.filters import Filters, UnknownCollection, covered_collections, scoped_predicate
from documents.search.sql import OPERATORS, SPECULATED
from documents.spaces import backend_for
from documents.spaces import vectors as spaces

__all__ = ["MODES", "Filters", "Hit", "UnknownCollection", "search"]

Statement = tuple[str, list[Any]]
Row = tuple[Any, ...]

MODES = ("vector", "keyword", "hybrid")

# How many times a search plans its vector arms again when the covered collections' spaces changed between its
# round trips (an embedding-space switch or rollback committing meanwhile).
REPLANS = 3


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
    # The passage's cosine similarity to the query from the vector arm (None: found by keywords only).
    # Unlike ``score`` (normalised per query in hybrid mode), it compares across queries: the answer's
    # relevance gate (chat.extractive) reads it.
    similarity: float | None = None


def search(
    *, user: Any, query: str, k: int = 10, filters: Filters | None = None, mode: str = "hybrid",
    candidates: int | None = None, query_vector: Sequence[float] | np.ndarray | None = None,
) -> list[Hit]:
    """The ``k`` best chunks for ``query`` among those ``user`` may read.

    ``query_vector`` is the query's embedding when the caller already has it (it must come from the
    configured backend's model, i.e. the default embedding space's): the vector arm of that space then skips
    embedding ``query`` again. Each covered collection is searched in its active embedding space, with the query
    embedded by that space's model; collections on different spaces are merged on cosine similarity.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    # PostgreSQL text cannot hold NUL, nor UTF-8 a lone surrogate ("\ud800" in a JSON body)
    query = without_surrogates((query or "").replace("\x00", "")).strip()[:2000]
    filters = filters or Filters()
    if not query or not user.is_authenticated or k <= 0:
        if filters.collection and user.is_authenticated:
            # A missing collection is an error, whatever the query.
            _check_covered(filters, _fetch_together(vector_connection(user), [_scope_sql(user, filters, None)])[0])
        return []
    k = min(k, 1000)
    limit = k if mode != "hybrid" else max(candidates or settings.RETRIEVAL_CANDIDATES, k)
    vector = None if mode == "keyword" else _checked_vector(query_vector) if query_vector is not None else None
    # Scaled with the index's (cached) row estimate and the rows asked for (tuning.ef_search); iterative scans
    # keep walking the HNSW graph until enough rows pass the filters.
    ef_search = None if mode == "keyword" else min(max(tuning.search_ef(limit), limit), tuning.MAX_EF_SEARCH)
    # A replica's connection, when one has the user's writes (core.replicas).
    db = vector_connection(user)
    if mode != "keyword":
        default = spaces.default()
    # The first statement finds the collections this search covers (access control) and hands them,
    # with the search settings, to the statements after it in the same transaction (see _scope_sql). A search
    # without filters of its own may run its vector arm and its keyword statement on their cached plans
    # (sql.CACHED_PLAN_SHARE, sql.keyword_plans).
    unfiltered = scoped_predicate(filters, alias="v")[0] == "true"
    cached_arm = (default.pk, SPECULATED) if unfiltered and mode != "keyword" else None
    statements = [_scope_sql(user, filters, ef_search, cached_arm, cached_keyword=unfiltered and mode == "keyword")]
    if mode != "keyword":
        # Which spaces and distances the covered collections search is only known from the database; the
        # default space's cosine arm is searched at once (skipped by the server unless a covered collection
        # searches it), so that the usual search is a single round trip.
        vectors = {default.pk: vector if vector is not None else _embedded(query, default)}
        statements.append(_vector_sql(filters, limit, vectors[default.pk], default, SPECULATED))
    if mode != "vector":
        if cached_arm:  # the keyword statement's own plan mode, whatever the vector arm ran on
            statements.append((sql.keyword_plans_statement(), []))
        statements.append(_keyword_sql(query, filters, limit))
    scope, *results = _fetch_together(db, statements)
    _check_covered(filters, scope)
    keyword = [_hit(row) for row in results.pop()] if mode != "vector" else []
    nearest_rows: list[list[Row]] = []
    if mode != "keyword":
        arms = [sql.parse_arm(arm) for arm in scope[0][-1]]
        arms = [(space_id, distance) for space_id, distance in arms if distance in OPERATORS]
        found = {(default.pk, SPECULATED): results[0]}
        others = [arm for arm in arms if arm not in found]
        for _ in range(REPLANS):
            if not others:
                break
            by_id = spaces.by_ids([space_id for space_id, _ in others])
            for space_id, _ in others:  # the query embedded once per space, by that space's own model
                if space_id not in vectors:
                    vectors[space_id] = _embedded(query, by_id[space_id])
            again, *rows = _fetch_together(db, [
                _scope_sql(user, filters, ef_search),
                *(_vector_sql(filters, limit, vectors[space_id], by_id[space_id], distance)
                  for space_id, distance in others),
            ])
            found.update(zip(others, rows, strict=True))
            # A switch or rollback that committed between the two round trips moves collections to other arms:
            # search those (the arms no longer covered gave no rows), so the answer is never empty or mixed.
            now = [arm for arm in map(sql.parse_arm, again[0][-1]) if arm[1] in OPERATORS]
            if now == arms:
                break
            arms, found = now, {arm: found[arm] for arm in now if arm in found and arm in others}
            others = [arm for arm in arms if arm not in found]
        nearest_rows = [found.get(arm, []) for arm in arms]
    threshold = settings.RETRIEVAL_MIN_SIMILARITY
    nearest = [_hit(row, relevant=row[-1] >= threshold, similarity=row[-1]) for rows in nearest_rows for row in rows]
    if len(nearest_rows) > 1:  # collections on different spaces or distances: merge on cosine similarity
        nearest = sorted(nearest, key=lambda hit: (-hit.score, hit.chunk_id))[:limit]
    if mode == "vector":
        return nearest
    if mode == "keyword":
        return keyword
    return _fuse([nearest, keyword], k)


def _hit(row: Row, relevant: bool = True, similarity: float | None = None) -> Hit:
    chunk_id, document_id, document_title, page, heading, text, score = row
    return Hit(chunk_id, document_id, document_title, page, heading, text, score, relevant, similarity)


def _check_covered(filters: Filters, scope: list[Row]) -> None:
    if filters.collection and not scope[0][-2]:  # _scope_sql's count of covered collections
        raise UnknownCollection(filters.collection)


def _checked_vector(query_vector: Sequence[float] | np.ndarray) -> np.ndarray:
    vector = np.asarray(query_vector, dtype=np.float32).reshape(-1)
    dimensions = spaces.default().dimensions
    if vector.shape[0] != dimensions or not np.isfinite(vector).all():
        raise ValueError(
            f"query_vector must hold {dimensions} finite numbers (the default embedding space's dimensions)."
        )
    return vector


def _embedded(query: str, space: EmbeddingSpace) -> np.ndarray:
    """The query's vector in ``space``, made by the space's own model."""
    return np.asarray(backend_for(space).embed_query(query), dtype=np.float32)


def _fetch_together(db: BaseDatabaseWrapper, statements: list[Statement]) -> list[list[Row]]:
    """The rows of each statement, all sent to the server in one round trip.

    A search used to take six round trips (BEGIN, two settings, the distances, the query, COMMIT),
    each costing about what the HNSW scan itself does on a busy server; then one simple-query message of
    every statement, bound on the client (the query vector as 384 numbers of text), each parsed and planned
    again by the server. Now a psycopg pipeline: the statements are bound on the server (the query vector
    in pgvector's binary form) and sent with the Sync that ends the pipeline, so it is still one round trip.
    PostgreSQL runs the statements before a Sync as one implicit transaction (or in the caller's), one after
    the other: the transaction-local settings of the first (set_config(..., true), i.e. SET LOCAL) hold for
    the ones after it, and end with it. psycopg prepares a statement once it has run on a connection a few times
    (settings: the databases' prepare_threshold), so it is not parsed again; the scope statement's plan is kept,
    and it has the others planned again for each search (sql.CUSTOM_PLANS: they depend on the collections),
    unless a lone wide vector arm, or the keyword statement of a wide search, can run on its statement's cached plan
    (sql.CACHED_PLAN_SHARE, sql.keyword_plans).

    Each statement has its own cursor (a pipeline's results go to the cursor that sent them):
    core.db.server_bound_cursor, in Django's wrapper.
    """
    cursors = [server_bound_cursor(db) for _ in statements]
    with db.wrap_database_errors:
        with db.connection.pipeline():
            for each, (text, params) in zip(cursors, statements, strict=True):
                each.execute(text, params)
        results = [each.fetchall() for each in cursors]
    for each in cursors:
        each.close()
    return results


def _scope_sql(
    user: Any, filters: Filters, ef_search: int | None, cached_arm: tuple[int, str] | None = None,
    cached_keyword: bool = False,
) -> Statement:
    """The first statement: the collections the search covers (access control), their distances, its settings."""
    return sql.scope_statement(*covered_collections(user, filters, "g"), ef_search, cached_arm, cached_keyword)


def _vector_sql(filters: Filters, limit: int, vector: np.ndarray, space: EmbeddingSpace, distance: str) -> Statement:
    return sql.vector_statement(*scoped_predicate(filters, alias="v"), limit, vector, space, distance)


def _keyword_sql(query: str, filters: Filters, limit: int) -> Statement:
    where, params = scoped_predicate(filters)
    return sql.keyword_statement(query, where, params, limit)


def _fuse(rankings: list[list[Hit]], k: int) -> list[Hit]:
    """A weighted sum of each arm's scores, min-max normalised per query.

    Cosine similarity and BM25 live on different scales; scaled to 0..1 within this query's
    candidates, they add up meaningfully. On SciFact this beats reciprocal rank fusion (0.70
    against 0.67 nDCG@10) because it keeps how far apart the scores are, not only their order.
    A chunk found by one arm only gets 0 from the other.
    """
    weights = (settings.HYBRID_VECTOR_WEIGHT, 1.0 - settings.HYBRID_VECTOR_WEIGHT)
    scores: dict[int, float] = {}
    relevant: dict[int, bool] = {}
    hits: dict[int, Hit] = {}
    for weight, ranking in zip(weights, rankings, strict=True):
        if not ranking:
            continue
        low, high = min(hit.score for hit in ranking), max(hit.score for hit in ranking)
        for hit in ranking:
            normalised = (hit.score - low) / (high - low) if high > low else 1.0
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weight * normalised
            relevant[hit.chunk_id] = relevant.get(hit.chunk_id, False) or hit.relevant
            hits.setdefault(hit.chunk_id, hit)
    best = sorted(scores, key=lambda chunk_id: (-scores[chunk_id], chunk_id))[:k]
    return [replace(hits[i], score=scores[i], relevant=relevant[i]) for i in best]
