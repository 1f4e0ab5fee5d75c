"""The SQL of a search, and the one place that says who may read a collection.

Table names come from the models (``Model._meta.db_table``, quoted once here), never written as
literals. The statements are built here and run by ``query``; the predicates they filter on come from
``filters``, which builds them on ``readable_collections``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection
from django.db.models import Model

from documents.models import Chunk, ChunkVector, Collection, Distance, Document, EmbeddingSpace, TermStat
from documents.search.indexes import IVFFLAT_REGEX
from documents.spaces.storage import vector_expression


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


COLLECTION = _table(Collection)
MEMBERS = _table(Collection.members.through)
DOCUMENT = _table(Document)
CHUNK = _table(Chunk)
CHUNK_VECTOR = _table(ChunkVector)
TERMSTAT = _table(TermStat)


def readable_collections(user_id: int | None) -> tuple[str, list[Any]]:
    """The ids of the collections the user ``user_id`` may read, as a subquery: owned, or shared as a member.

    The security boundary, written once: every search statement decides access with it, from the user's
    id alone. ``Collection.objects.visible_to`` says the same in the ORM for pages and admin lists;
    tests/test_search_access.py checks on random data that the two agree.
    """
    return (
        f"SELECT id FROM {COLLECTION} WHERE owner_id = %s UNION SELECT collection_id FROM {MEMBERS} WHERE user_id = %s",
        [user_id, user_id],
    )


# The operator of each distance (matching its partial index's opclass), and its result turned into
# a cosine similarity. Every backend's vectors are L2-normalised, so the three are comparable.
OPERATORS = {"cosine": "<=>", "l2": "<->", "ip": "<#>"}
SIMILARITY = {"cosine": "1 - {d}", "l2": "1 - {d} * {d} / 2", "ip": "-{d}"}


# The default distance of a collection, searched (in the default space) in the first round trip (query.search()).
SPECULATED = "cosine"

# The collections a search covers, as the statements after scope_statement() read them. The planner evaluates
# this stable expression when it estimates (it knows the ids, as if they were written in the query), so a
# search whose collections hold 1% of the chunks gets the collection index and an exact sort, as it does
# with a collection filter, instead of an HNSW scan that must examine about 100 rows for each it keeps.
SCOPE = "current_setting('rag.collections')::bigint[]"


def arm_setting(space_id: int, distance: str) -> str:
    """The transaction-local setting that holds the covered collections searching ``space_id`` by ``distance``."""
    return f"rag.c{int(space_id)}_{distance}"


def arm_scope(space_id: int, distance: str) -> str:
    """The covered collections of one vector arm (a space and a distance), as SCOPE is for all (NULL: none)."""
    return f"current_setting('{arm_setting(space_id, distance)}', true)::bigint[]"


def hnsw_settings(ef_search: str) -> str:
    """HNSW's ef_search (an SQL expression: a quoted literal, or %s) and its iterative scan, as transaction-local
    set_config calls for a statement's select list (like SET LOCAL: nothing outlives the transaction)."""
    return f"set_config('hnsw.ef_search', {ef_search}, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)"


def scope_statement(covered: str, params: list[Any], ef_search: int | None) -> tuple[str, list[Any]]:
    """The first statement of a search: the collections it covers, their spaces and distances, its settings.

    ``covered`` is the predicate on the collections (alias ``g``) the search covers (filters.covered_collections:
    readable, and asked for): their ids go into the transaction-local setting ``rag.collections`` (SCOPE),
    which the keyword arm's chunk query that follows in the same transaction filters on. A collection searches
    the vectors of its active embedding space, by its distance: each distinct (space, distance) pair is a
    vector arm, whose collections go into a setting of their own (``arm_scope``). The statement's only row ends
    with the number of covered collections and the arms, as ``"space_id:distance"`` texts. Transaction-local,
    like SET LOCAL: nothing outlives the search (or the caller's transaction).
    """
    hnsw = "" if ef_search is None else (
        hnsw_settings(f"'{int(ef_search)}'") + ", "
        f"set_config('ivfflat.probes', {probes_sql()}, true), "
        "set_config('ivfflat.iterative_scan', 'relaxed_order', true), "
    )
    return (
        f"WITH covered AS MATERIALIZED (SELECT g.id, g.active_space_id, g.distance FROM {COLLECTION} g "
        f"WHERE {covered}), "
        "arms AS MATERIALIZED ("
        "SELECT active_space_id || ':' || distance AS arm, "
        "set_config('rag.c' || active_space_id || '_' || distance, array_agg(id)::text, true) "
        "FROM covered WHERE active_space_id IS NOT NULL GROUP BY active_space_id, distance) "
        f"SELECT {hnsw}set_config('rag.collections', coalesce((SELECT array_agg(id) FROM covered)::text, '{{}}'), "
        "true), (SELECT count(*) FROM covered), coalesce((SELECT array_agg(arm ORDER BY arm) FROM arms), '{}')",
        params,
    )


def parse_arm(arm: str) -> tuple[int, str]:
    """``"space_id:distance"`` (scope_statement's arms) as (space id, distance)."""
    space_id, distance = arm.split(":", 1)
    return int(space_id), distance


def probes_sql() -> str:
    """IVFFLAT_PROBES, or √lists of the IVFFlat index a space has for a distance (documents.search.indexes): read
    from the catalog in the same statement (one index lookup), so a rebuilt index with other lists is used at
    once."""
    if settings.IVFFLAT_PROBES > 0:
        return f"'{int(settings.IVFFLAT_PROBES)}'"
    return (
        "coalesce((SELECT greatest(1, round(sqrt(max(substring(o FROM '^lists=(\\d+)$')::int))))::int::text "
        f"FROM pg_class r, unnest(r.reloptions) o WHERE r.relname ~ '{IVFFLAT_REGEX}' AND o LIKE 'lists=%%'), "
        "'1')"
    )


@cache
def _literal_format(dimensions: int) -> str:
    return "[" + ",".join(["%.9g"] * dimensions) + "]"


def vector_literal(vector: np.ndarray) -> str:
    # Nine significant digits give back every float32 exactly; formatting a tuple of Python floats at
    # once is several times faster than repr() of each (17 digits) and sends 35% fewer bytes.
    return _literal_format(vector.shape[0]) % tuple(vector.tolist())


def vector_statement(
    where: str, params: list[Any], limit: int, vector: np.ndarray, space: EmbeddingSpace, distance: str,
) -> tuple[str, list[Any]]:
    """The ``limit`` chunks nearest to ``vector`` among the ``where`` vectors (alias ``v``) of one arm: the covered
    collections that search ``space`` by ``distance``.

    The space's id literal prunes the ChunkVector table to its partition, the distance literal picks that
    partition's partial HNSW index, and the order is by the expression the index is built on
    (storage.vector_expression). The check of the arm's setting is a one-time filter: when no covered collection
    searches this arm, the index is never opened. relaxed_order may return rows out of order: re-sort the
    materialised candidates ("+ 0": PostgreSQL 17+ would otherwise trust the CTE's order and skip the sort, as
    pgvector's README warns). ORDER BY the output column sends the query vector once; the index is used the same.
    The chunks' text is read for the ``limit`` found only.
    """
    distance = Distance(distance).value  # from a fixed table, never from input
    operator, dimensions = OPERATORS[distance], int(space.dimensions)
    similarity = SIMILARITY[distance].format(d="n.gap")
    return (
        f"""
        WITH nearest AS MATERIALIZED (
            SELECT v.chunk_id, v.document_id, {vector_expression(space, "v.embedding")} {operator}
                   %s::vector({dimensions}) AS gap
            FROM {CHUNK_VECTOR} v
            WHERE v.space_id = {int(space.pk)} AND v.distance = '{distance}'
              AND v.collection_id = ANY({arm_scope(space.pk, distance)}) AND {where}
              AND current_setting('{arm_setting(space.pk, distance)}', true) IS NOT NULL
            ORDER BY gap
            LIMIT %s
        )
        SELECT n.chunk_id, n.document_id, d.title, c.page, c.heading, c.text, {similarity}
        FROM nearest n JOIN {CHUNK} c ON c.id = n.chunk_id JOIN {DOCUMENT} d ON d.id = n.document_id
        ORDER BY n.gap + 0
        """,
        [vector_literal(vector), *params, limit],
    )


# BM25's usual constants (Robertson & Zaragoza): term-frequency saturation and length normalisation.
BM25_K1 = 1.2
BM25_B = 0.75
# Candidates are chunks holding one of the query's most telling words: the rarest few, and any
# word in under 5% of the chunks. A question's common words ("study", "effect") then only weigh
# in the score, instead of making PostgreSQL rank a large part of the table.
SELECTIVE_TERMS = 3
SELECTIVE_DF = 0.05


def keyword_statement(query: str, where: str, params: list[Any], limit: int) -> tuple[str, list[Any]]:
    """BM25 over the ``where`` chunks' tsvectors, with document frequencies of the covered collections.

    PostgreSQL's ts_rank has no inverse document frequency: on SciFact it reaches nDCG@10 0.42
    where BM25 reaches 0.67. The frequencies come from the TermStat table (kept by triggers) and
    are summed over the collections this search covers, so other users' documents never weigh in.
    """
    pool = min(max(limit * 4, 300), 2000)
    return (
        f"""
        WITH scope AS (
            SELECT g.id, g.chunk_total, g.token_total FROM {COLLECTION} g WHERE g.id = ANY({SCOPE})
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
            LEFT JOIN {TERMSTAT} t ON t.lexeme = w.lexeme AND t.collection_id IN (SELECT id FROM scope)
            GROUP BY w.lexeme, tot.n
        ), selective AS (
            SELECT string_agg(quote_literal(lexeme), ' | ')::tsquery AS query FROM (
                SELECT lexeme, df, row_number() OVER (ORDER BY df, lexeme) AS rarity FROM terms WHERE df > 0
            ) ranked, totals tot
            WHERE ranked.rarity <= {SELECTIVE_TERMS} OR ranked.df < {SELECTIVE_DF} * tot.n
        ), candidates AS MATERIALIZED (
            SELECT c.id, c.document_id, c.page, c.heading, c.text, c.search_vector, c.token_count
            FROM {CHUNK} c, selective q
            WHERE c.search_vector @@ q.query AND {where}
            ORDER BY ts_rank(c.search_vector, q.query, 1) DESC, c.id
            LIMIT {pool}
        )
        SELECT c.id, c.document_id, d.title, c.page, c.heading, c.text, s.score
        FROM candidates c JOIN {DOCUMENT} d ON d.id = c.document_id, totals tot,
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
