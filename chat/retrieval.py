"""The one place that returns chunks: permission-filtered vector, keyword and hybrid search.

Access control lives inside the SQL (a subquery of the collections the user may read), never
in Python after the fact, so no code path can forget it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from functools import cache

import numpy as np
import psycopg
from django.conf import settings
from django.db import transaction

from documents import embeddings
from documents.db import vector_cursor
from ragsite.inputs import parse_id, without_surrogates

MODES = ("vector", "keyword", "hybrid")


@dataclass(frozen=True)
class Filters:
    collections: tuple[int, ...] = ()
    documents: tuple[int, ...] = ()
    content_types: tuple[str, ...] = ()
    metadata: dict = field(default_factory=dict)  # JSON containment on the chunk's metadata
    created_after: date | None = None
    created_before: date | None = None
    # A collection's id or name, as the API takes it: the readable collection of that id or name (the
    # first by id). search() raises UnknownCollection when the user can read none.
    collection: str = ""


class UnknownCollection(LookupError):
    """``Filters.collection`` names no collection that the user can read."""


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


def _where(user, filters: Filters, model_name: str | None) -> tuple[str, list]:
    """The chunks' predicate on its own: readable by ``user`` and filtered (a query without _scope_sql)."""
    # Collections the user may read: owned, or shared with them as a member.
    readable = (
        "c.collection_id IN (SELECT id FROM documents_collection WHERE owner_id = %s"
        " UNION SELECT collection_id FROM documents_collection_members WHERE user_id = %s)"
    )
    return _predicate(readable, [user.pk, user.pk], filters, model_name, collections=True)


def _predicate(
    scope: str, params: list, filters: Filters, model_name: str | None, *, collections: bool = False,
) -> tuple[str, list]:
    clauses = [scope]
    params = list(params)
    if model_name is not None:
        # Only vectors from the model that embeds the query are comparable with it.
        clauses.append("c.embedding_model = %s")
        params.append(model_name)
    if collections and filters.collections:
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
    candidates: int | None = None, query_vector: Sequence[float] | np.ndarray | None = None,
) -> list[Hit]:
    """The ``k`` best chunks for ``query`` among those ``user`` may read.

    ``query_vector`` is the query's embedding when the caller already has it (it must come from the
    configured backend's model): the vector arm then skips embedding ``query`` again.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    # PostgreSQL text cannot hold NUL, nor UTF-8 a lone surrogate ("\ud800" in a JSON body)
    query = without_surrogates((query or "").replace("\x00", "")).strip()[:2000]
    filters = filters or Filters()
    if not query or not user.is_authenticated or k <= 0:
        if filters.collection and user.is_authenticated:
            with vector_cursor() as cursor:  # a missing collection is an error, whatever the query
                _check_covered(filters, _fetch_together(cursor, [_scope_sql(user, filters, None)])[0])
        return []
    k = min(k, 1000)
    limit = k if mode != "hybrid" else max(candidates or settings.RETRIEVAL_CANDIDATES, k)
    vector = None if mode == "keyword" else _checked_vector(query_vector) if query_vector is not None else None
    # Iterative scans keep walking the HNSW graph until enough rows pass the filters.
    ef_search = None if mode == "keyword" else min(max(settings.HNSW_EF_SEARCH, limit), 1000)
    with vector_cursor() as cursor:
        # The first statement finds the collections this search covers (access control) and hands them,
        # with the search settings, to the statements after it in the same transaction (see _scope_sql).
        statements = [_scope_sql(user, filters, ef_search)]
        if mode != "keyword":
            backend = embeddings.get_backend()
            if vector is None:
                vector = np.asarray(backend.embed_query(query), dtype=np.float32)
            # Which distances the covered collections use is only known from the database; the
            # default one is searched at once (skipped by the server unless a covered collection
            # uses it), so that the usual search is a single round trip.
            statements.append(_vector_sql(filters, limit, vector, SPECULATED, backend.model_name))
        if mode != "vector":
            statements.append(_keyword_sql(query, filters, limit))
        scope, *results = _fetch_together(cursor, statements)
        _check_covered(filters, scope)
        keyword = [Hit(*row) for row in results.pop()] if mode != "vector" else []
        nearest_rows: list[list[tuple]] = []
        if mode != "keyword":
            distances = sorted(distance for distance in scope[0][-1] if distance in OPERATORS)
            others = [distance for distance in distances if distance != SPECULATED]
            found = {SPECULATED: results[0]}
            if others:
                _, *rows = _fetch_together(cursor, [
                    _scope_sql(user, filters, ef_search),
                    *(_vector_sql(filters, limit, vector, distance, backend.model_name) for distance in others),
                ])
                found.update(zip(others, rows, strict=True))
            nearest_rows = [found[distance] for distance in distances]
    threshold = settings.RETRIEVAL_MIN_SIMILARITY
    nearest = [Hit(*row, relevant=row[-1] >= threshold, similarity=row[-1]) for rows in nearest_rows for row in rows]
    if len(nearest_rows) > 1:  # collections with different distances: merge on cosine similarity
        nearest = sorted(nearest, key=lambda hit: (-hit.score, hit.chunk_id))[:limit]
    if mode == "vector":
        return nearest
    if mode == "keyword":
        return keyword
    return _fuse([nearest, keyword], k)


def _check_covered(filters: Filters, scope: list[tuple]) -> None:
    if filters.collection and not scope[0][-2]:  # _scope_sql's count of covered collections
        raise UnknownCollection(filters.collection)


def _checked_vector(query_vector) -> np.ndarray:
    vector = np.asarray(query_vector, dtype=np.float32).reshape(-1)
    if vector.shape[0] != settings.EMBEDDING_DIMENSIONS or not np.isfinite(vector).all():
        raise ValueError(
            f"query_vector must hold {settings.EMBEDDING_DIMENSIONS} finite numbers (EMBEDDING_DIMENSIONS)."
        )
    return vector


def _fetch_together(cursor, statements: list[tuple[str, list]]) -> list[list[tuple]]:
    """The rows of each statement, all sent to the server in one round trip.

    A search used to take six round trips (BEGIN, two settings, the distances, the query, COMMIT),
    each costing about what the HNSW scan itself does on a busy server. Django's psycopg cursors
    bind parameters on the client (unless OPTIONS sets server_side_binding), so one simple-protocol
    message can carry every statement. PostgreSQL runs such a message as one implicit transaction,
    statement after statement (each planned once the one before it has run): the settings of the
    first (set_config(..., true), i.e. SET LOCAL) last until its last statement (or, in a caller's
    transaction, until that ends, as they always did). With server-side binding, they run one by one
    in a transaction instead.
    """
    if _binds_client_side(cursor):
        cursor.execute("; ".join(sql for sql, _ in statements),
                       [param for _, params in statements for param in params])
        results = [cursor.fetchall()]
        while cursor.nextset():
            results.append(cursor.fetchall())
        return results
    with transaction.atomic():
        results = []
        for sql, params in statements:
            cursor.execute(sql, params)
            results.append(cursor.fetchall())
        return results


def _binds_client_side(cursor) -> bool:
    return isinstance(cursor.cursor, psycopg.ClientCursor)


# The operator of each distance (matching its partial index's opclass), and its result turned into
# a cosine similarity. Every backend's vectors are L2-normalised, so the three are comparable.
OPERATORS = {"cosine": "<=>", "l2": "<->", "ip": "<#>"}
SIMILARITY = {"cosine": "1 - {d}", "l2": "1 - {d} * {d} / 2", "ip": "-{d}"}


# The default distance of a collection, searched in the first round trip (see search()).
SPECULATED = "cosine"

# The collections a search covers, as the statements after _scope_sql() read them. The planner evaluates
# this stable expression when it estimates (it knows the ids, as if they were written in the query), so a
# search whose collections hold 1% of the chunks gets the collection index and an exact sort, as it does
# with a collection filter, instead of an HNSW scan that must examine about 100 rows for each it keeps.
SCOPE = "current_setting('rag.collections')::bigint[]"


def _covered(user, filters: Filters, alias: str) -> tuple[str, list]:
    """The collections ``alias`` rows of documents_collection a search covers: readable, and filtered."""
    sql = (
        f"{alias}.id IN (SELECT id FROM documents_collection WHERE owner_id = %s"
        " UNION SELECT collection_id FROM documents_collection_members WHERE user_id = %s)"
    )
    params: list = [user.pk, user.pk]
    if filters.collections:
        sql += f" AND {alias}.id = ANY(%s)"
        params.append(list(filters.collections))
    if filters.collection:
        sql += (
            f" AND {alias}.id = (SELECT min(r.id) FROM documents_collection r WHERE (r.name = %s OR r.id = %s)"
            " AND r.id IN (SELECT id FROM documents_collection WHERE owner_id = %s"
            " UNION SELECT collection_id FROM documents_collection_members WHERE user_id = %s))"
        )
        reference = filters.collection
        storable = "\x00" not in reference and without_surrogates(reference) == reference
        name = reference if storable else None  # text cannot hold NUL or a lone surrogate: no such name
        params += [name, parse_id(reference), user.pk, user.pk]
    return sql, params


def _scope_sql(user, filters: Filters, ef_search: int | None) -> tuple[str, list]:
    """The first statement of a search: the collections it covers, their distances, and its settings.

    Access control is decided here, in SQL, from the user's id: the ids of the collections the user
    may read (and asked for) go into the transaction-local setting ``rag.collections`` (SCOPE), which
    the chunk queries that follow in the same transaction filter on; their distances go into
    ``rag.distances``, and come back as this statement's only row, after their number. Transaction-local,
    like SET LOCAL: nothing outlives the search (or the caller's transaction).
    """
    covered, params = _covered(user, filters, "g")
    hnsw = "" if ef_search is None else (
        f"set_config('hnsw.ef_search', '{int(ef_search)}', true), "
        "set_config('hnsw.iterative_scan', 'relaxed_order', true), "
        f"set_config('ivfflat.probes', {_probes_sql()}, true), "
        "set_config('ivfflat.iterative_scan', 'relaxed_order', true), "
    )
    return (
        f"SELECT {hnsw}set_config('rag.collections', coalesce(array_agg(g.id)::text, '{{}}'), true), "
        "set_config('rag.distances', coalesce(array_agg(DISTINCT g.distance)::text, '{}'), true), "
        "count(*), coalesce(array_agg(DISTINCT g.distance), '{}') "
        f"FROM documents_collection g WHERE {covered}",
        params,
    )


def _probes_sql() -> str:
    """IVFFLAT_PROBES, or √lists of the IVFFlat index a distance has (documents.indexes): read from the
    catalog in the same statement (one index lookup), so a rebuilt index with other lists is used at once."""
    if settings.IVFFLAT_PROBES > 0:
        return f"'{int(settings.IVFFLAT_PROBES)}'"
    names = ",".join(f"chunk_embedding_ivfflat_{distance}" for distance in OPERATORS)
    return (
        "coalesce((SELECT greatest(1, round(sqrt(max(substring(o FROM '^lists=(\\d+)$')::int))))::int::text "
        f"FROM pg_class r, unnest(r.reloptions) o WHERE r.relname = ANY('{{{names}}}') AND o LIKE 'lists=%%'), '1')"
    )


def _scoped_where(filters: Filters, model_name: str | None) -> tuple[str, list]:
    """The chunks' predicate after _scope_sql(): in the covered collections (SCOPE), and filtered."""
    return _predicate(f"c.collection_id = ANY({SCOPE})", [], filters, model_name)


@cache
def _literal_format(dimensions: int) -> str:
    return "[" + ",".join(["%.9g"] * dimensions) + "]"


def _vector_literal(vector: np.ndarray) -> str:
    # Nine significant digits give back every float32 exactly; formatting a tuple of Python floats at
    # once is several times faster than repr() of each (17 digits) and sends 35% fewer bytes.
    return _literal_format(vector.shape[0]) % tuple(vector.tolist())


def _vector_sql(filters: Filters, limit: int, vector: np.ndarray, distance: str, model_name: str):
    where, params = _scoped_where(filters, model_name)
    operator = OPERATORS[distance]  # from a fixed table, never from input
    similarity = SIMILARITY[distance].format(d="n.gap")
    # The distance literal lets the planner pick that distance's partial HNSW index; the check of
    # rag.distances is a one-time filter: without a covered collection of this distance, the index is
    # never opened. relaxed_order may return rows out of order: re-sort the materialised candidates
    # ("+ 0": PostgreSQL 17+ would otherwise trust the CTE's order and skip the sort, as pgvector's
    # README warns). ORDER BY the output column sends the query vector once; the index is used the same.
    return (
        f"""
        WITH nearest AS MATERIALIZED (
            SELECT c.id, c.document_id, c.page, c.heading, c.text, c.embedding {operator} %s::vector AS gap
            FROM documents_chunk c
            WHERE c.distance = '{distance}' AND {where}
              AND '{distance}' = ANY(current_setting('rag.distances')::text[])
            ORDER BY gap
            LIMIT %s
        )
        SELECT n.id, n.document_id, d.title, n.page, n.heading, n.text, {similarity}
        FROM nearest n JOIN documents_document d ON d.id = n.document_id
        ORDER BY n.gap + 0
        """,
        [_vector_literal(vector), *params, limit],
    )


# BM25's usual constants (Robertson & Zaragoza): term-frequency saturation and length normalisation.
BM25_K1 = 1.2
BM25_B = 0.75
# Candidates are chunks holding one of the query's most telling words: the rarest few, and any
# word in under 5% of the chunks. A question's common words ("study", "effect") then only weigh
# in the score, instead of making PostgreSQL rank a large part of the table.
SELECTIVE_TERMS = 3
SELECTIVE_DF = 0.05


def _keyword_sql(query: str, filters: Filters, limit: int):
    """BM25 over the chunks' tsvectors, with document frequencies of the covered collections.

    PostgreSQL's ts_rank has no inverse document frequency: on SciFact it reaches nDCG@10 0.42
    where BM25 reaches 0.67. The frequencies come from documents_termstat (kept by triggers) and
    are summed over the collections this search covers, so other users' documents never weigh in.
    """
    where, params = _scoped_where(filters, None)
    pool = min(max(limit * 4, 300), 2000)
    return (
        f"""
        WITH scope AS (
            SELECT g.id, g.chunk_total, g.token_total FROM documents_collection g WHERE g.id = ANY({SCOPE})
        ), totals AS (
            SELECT greatest(sum(chunk_total), 1)::float8 AS n,
                   greatest(sum(token_total), 1)::float8 / greatest(sum(chunk_total), 1) AS avgdl
            FROM scope
        ), words AS (
            SELECT DISTINCT lexeme FROM unnest(tsvector_to_array(to_tsvector('english', %s))) AS lexeme
        ), terms AS (
            SELECT w.lexeme, coalesce(sum(t.df), 0) AS df,
                   ln(1 + (tot.n - coalesce(sum(t.df), 0) + 0.5) / (coalesce(sum(t.df), 0) + 0.5)) AS idf
            FROM words w CROSS JOIN totals tot
            LEFT JOIN documents_termstat t ON t.lexeme = w.lexeme AND t.collection_id IN (SELECT id FROM scope)
            GROUP BY w.lexeme, tot.n
        ), selective AS (
            SELECT string_agg(quote_literal(lexeme), ' | ')::tsquery AS query FROM (
                SELECT lexeme, df, row_number() OVER (ORDER BY df, lexeme) AS rarity FROM terms WHERE df > 0
            ) ranked, totals tot
            WHERE ranked.rarity <= {SELECTIVE_TERMS} OR ranked.df < {SELECTIVE_DF} * tot.n
        ), candidates AS MATERIALIZED (
            SELECT c.id, c.document_id, c.page, c.heading, c.text, c.search_vector, c.token_count
            FROM documents_chunk c, selective q
            WHERE c.search_vector @@ q.query AND {where}
            ORDER BY ts_rank(c.search_vector, q.query, 1) DESC, c.id
            LIMIT {pool}
        )
        SELECT c.id, c.document_id, d.title, c.page, c.heading, c.text, s.score
        FROM candidates c JOIN documents_document d ON d.id = c.document_id, totals tot,
        LATERAL (
            SELECT coalesce(sum(t.idf * (array_length(u.positions, 1) * ({BM25_K1} + 1)) / (
                array_length(u.positions, 1) + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * c.token_count / tot.avgdl)
            )), 0) AS score
            FROM unnest(c.search_vector) u JOIN terms t ON t.lexeme = u.lexeme
        ) s
        ORDER BY s.score DESC, c.id
        LIMIT %s
        """,
        [query, *params, limit],
    )


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
