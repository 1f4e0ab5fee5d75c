"""The SQL of a search, and the one place that says who may read a collection.

Table names come from the models (``Model._meta.db_table``, quoted once here), never written as
literals. The statements are built here and run by ``query``; the predicates they filter on come from
``filters``, which builds them on ``readable_collections``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection
from django.db.models import Model

from documents.models import Chunk, ChunkVector, Collection, Distance, Document, EmbeddingSpace, TermStat
from documents.search.indexes import ivfflat_name_sql
from documents.spaces.storage import partition_name, vector_expression


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
    """The covered collections of one vector arm (a space and a distance), as SCOPE is for all (NULL: none).

    A custom setting once set in a session reads '' (not NULL) in a later transaction that did not set it: a
    search whose second round trip found other arms than its first (a switch committed in between) must get
    no rows from the arm, not a cast error."""
    return f"nullif(current_setting('{arm_setting(space_id, distance)}', true), '')::bigint[]"


def hnsw_settings(ef_search: str) -> str:
    """HNSW's ef_search (an SQL expression: a quoted literal, or %s) and its iterative scan, as transaction-local
    set_config calls for a statement's select list (like SET LOCAL: nothing outlives the transaction)."""
    return f"set_config('hnsw.ef_search', {ef_search}, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)"


def scope_statement(
    covered: str, params: list[Any], ef_search: int | None, cached_arm: tuple[int, str] | None = None,
    cached_keyword: bool = False,
) -> tuple[str, list[Any]]:
    """The first statement of a search: the collections it covers, their spaces and distances, its settings.

    ``covered`` is the predicate on the collections (alias ``g``) the search covers (filters.covered_collections:
    readable, and asked for): their ids go into the transaction-local setting ``rag.collections`` (SCOPE),
    which the keyword arm's chunk query that follows in the same transaction filters on. A collection searches
    the vectors of its active embedding space, by its distance: each distinct (space, distance) pair is a
    vector arm, whose collections go into a setting of their own (``arm_scope``). The statement's only row ends
    with the number of covered collections and the arms, as ``"space_id:distance"`` texts. Transaction-local,
    like SET LOCAL: nothing outlives the search (or the caller's transaction).

    ``cached_arm`` (a space id and distance): the vector statement after this one is that arm's, with no predicate
    of its own (any other statement comes after keyword_plans_statement()); when it is the search's only arm and a
    wide one (CACHED_PLAN_SHARE), its plan is the one cached for the statement instead of one made for this search.
    ``cached_keyword``: the statement after this one is a keyword statement with no predicate of its own, which runs
    on its cached plan when the search is wide (keyword_plans).
    """
    hnsw = "" if ef_search is None else (
        hnsw_settings(f"'{int(ef_search)}'") + ", "
        f"set_config('ivfflat.probes', {probes_sql()}, true), "
        "set_config('ivfflat.iterative_scan', 'relaxed_order', true), "
    )
    plans = (cached_plans(*cached_arm) if cached_arm is not None
             else keyword_plans("SELECT coalesce(sum(chunk_total), 0) FROM covered") if cached_keyword
             else CUSTOM_PLANS)
    return (
        f"WITH covered AS MATERIALIZED (SELECT g.id, g.active_space_id, g.distance, g.chunk_total FROM {COLLECTION} g "
        f"WHERE {covered}), "
        "arms AS MATERIALIZED ("
        "SELECT active_space_id, distance, active_space_id || ':' || distance AS arm, sum(chunk_total) AS chunks, "
        "set_config('rag.c' || active_space_id || '_' || distance, array_agg(id)::text, true) "
        "FROM covered WHERE active_space_id IS NOT NULL GROUP BY active_space_id, distance) "
        f"SELECT {plans}, {hnsw}"
        "set_config('rag.collections', coalesce((SELECT array_agg(id) FROM covered)::text, '{}'), true), "
        "(SELECT count(*) FROM covered), coalesce((SELECT array_agg(arm ORDER BY arm) FROM arms), '{}')",
        params,
    )


# The statements after scope_statement() are planned for each search's own covered collections (SCOPE), as if they
# were written in them, even once psycopg has prepared them (query._fetch_together): a generic plan made for an 80%
# collection (the HNSW index) would be kept for a 1% one (the collection index and an exact sort), and the other way
# round. The scope statement itself, planned before this takes effect, is the same plan for every search.
CUSTOM_PLANS = "set_config('plan_cache_mode', 'force_custom_plan', true)"

# Planning the vector statement is most of what it costs beyond pgvector's bare query (bench/request_path.py: 0.6 of
# 0.9 ms at 100k on a slow host). A search whose only arm covers at least this share of its space's vectors takes the
# HNSW index whatever its collections are, so it runs on the plan cached for its statement (force_generic_plan, made
# under such a search: scope_statement's ``cached_arm``). The share is of the partition's row estimate (pg_class, kept
# by ANALYZE), never trusted before the first one; a narrower search, or one with filters, is planned for itself. A
# search's keyword statement follows the same rule over the chunk table (keyword_plans).
CACHED_PLAN_SHARE = 0.5


def _plans_if_wide(relation: str, chunks: str) -> str:
    """A plan mode: the statement's cached plan when ``chunks`` (an SQL expression: the chunks a search covers) are at
    least CACHED_PLAN_SHARE of ``relation``'s row estimate (never trusted before its first ANALYZE), else one planned
    for this search."""
    return (
        "set_config('plan_cache_mode', CASE WHEN EXISTS (SELECT 1 FROM pg_class r "
        f"WHERE r.oid = to_regclass('{relation}') AND r.reltuples > 0 AND ({chunks}) >= {CACHED_PLAN_SHARE} * "
        "r.reltuples) THEN 'force_generic_plan' ELSE 'force_custom_plan' END, true)"
    )


def cached_plans(space_id: int, distance: str) -> str:
    """scope_statement's plan mode when the vector statement of (``space_id``, ``distance``) follows it (and any other
    statement comes after keyword_plans_statement()): its cached plan when that arm is the search's only one and wide
    (CACHED_PLAN_SHARE), else one planned for this search."""
    distance = Distance(distance).value  # from a fixed table, never from input
    arm = f"SELECT a.chunks FROM arms a WHERE a.active_space_id = {int(space_id)} AND a.distance = '{distance}'"
    only_arm = "(SELECT count(*) FROM arms) = 1"
    return _plans_if_wide(partition_name(int(space_id)), f"CASE WHEN {only_arm} THEN ({arm}) END")


def keyword_plans(covered_chunks: str) -> str:
    """The keyword statement's plan mode: the plan cached for it when the search has no filters of its own and its
    collections hold at least CACHED_PLAN_SHARE of the chunk table's rows (``covered_chunks``: an SQL expression of
    their chunks), else one planned for this search.

    Planning the keyword statement cost a hybrid search a millisecond of its ten at 100k chunks. A wide search's plan is
    the same whatever its collections (the GIN index finds the candidates, the scope filters them); a narrow one's
    combines the GIN index with the collection index, and must not be kept for a wide search, nor the other way round:
    the cached plan is only ever made, and used, under a wide search."""
    return _plans_if_wide(CHUNK, covered_chunks)


def keyword_plans_statement() -> str:
    """keyword_plans as a statement of its own, between a vector arm that may have run on its cached plan and the
    keyword statement of a search without filters of its own."""
    covered = f"SELECT coalesce(sum(g.chunk_total), 0) FROM {COLLECTION} g WHERE g.id = ANY({SCOPE})"
    return "SELECT " + keyword_plans(covered)


def parse_arm(arm: str) -> tuple[int, str]:
    """``"space_id:distance"`` (scope_statement's arms) as (space id, distance)."""
    space_id, distance = arm.split(":", 1)
    return int(space_id), distance


def probes_sql() -> str:
    """IVFFLAT_PROBES, or √lists of the IVFFlat indexes of the arms searched (scope_statement's ``arms``; an arm
    has one when `manage.py vector_index --type ivfflat` built it, documents.search.indexes): read from the
    catalog in the same statement, each index by its name (not by a pattern over every relation, which cost a
    tenth of a millisecond a search at 20k rows), so that a rebuilt index with other lists is used at once."""
    if settings.IVFFLAT_PROBES > 0:
        return f"'{int(settings.IVFFLAT_PROBES)}'"
    index = ivfflat_name_sql("a.active_space_id", "a.distance")
    return (
        "coalesce((SELECT greatest(1, round(sqrt(max(substring(o FROM '^lists=(\\d+)$')::int))))::int::text "
        f"FROM arms a, pg_class r, unnest(r.reloptions) o WHERE r.oid = to_regclass({index}) "
        "AND o LIKE 'lists=%%'), '1')"
    )


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
    The limit is written in the statement, not sent as a parameter: a plan cached for an unknown LIMIT is made for a
    tenth of the rows, a sequential scan and a sort (40 ms instead of 2.5 at 100k; CACHED_PLAN_SHARE).
    The chunks' text is read for the ``limit`` found only, their documents' titles by a subquery each (no join
    order to plan). The vector goes as a parameter in pgvector's binary form (query._fetch_together binds on the
    server), not as text the server parses.
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
              AND {arm_scope(space.pk, distance)} IS NOT NULL
            ORDER BY gap
            LIMIT {int(limit)}
        )
        SELECT n.chunk_id, n.document_id, (SELECT d.title FROM {DOCUMENT} d WHERE d.id = n.document_id),
               c.page, c.heading, c.text, {similarity}
        FROM nearest n JOIN {CHUNK} c ON c.id = n.chunk_id
        ORDER BY n.gap + 0
        """,
        [vector, *params],
    )


# BM25's usual constants (Robertson & Zaragoza): term-frequency saturation and length normalisation.
BM25_K1 = 1.2
BM25_B = 0.75
# Which chunks BM25 scores. Reading a chunk (a heap page) is what a keyword search costs: the old statement
# read every chunk holding one of the query's words in under 5% of the chunks (2,500 to 12,000 at 100k) to
# sort them by ts_rank. The top BM25 chunks are those holding the rarest words, or several of the query's
# words at once: the candidates are the chunks holding the rarest words up to RARE_ROWS_PER_RESULT rows per
# result asked (at least RARE_ROWS), and those holding two of the words in under PAIR_DF of the chunks (or
# PAIR_ROWS, in a small collection), which the GIN index finds without reading a chunk. At 100k chunks that
# is ~300 chunks, and the same top 10 as scoring every matching chunk (bench/hybrid_keyword.py).
# A word joins the rarest only while their rows together stay within the candidates' bound (CANDIDATES_PER_RESULT;
# the rarest word always does): a word in most chunks after rarer ones (a name in every chunk's heading) once filled
# the bound with chunks in no order, read them all, and cut off chunks of the rare words the LIMIT came to after them.
# Such a word pairs with the words after it when it may (PAIR_DF), and when the rarer words' chunks are fewer than
# the results asked, its own chunks make up the rest (``fill``: as many as asked, in no order, read after the rare
# words' chunks instead of before or instead of them); otherwise only its score counts, in the chunks the other
# words find.
RARE_ROWS = 100
RARE_ROWS_PER_RESULT = 2
PAIR_DF = 0.02
PAIR_ROWS = 500
# At most this many candidates per result asked (at least MIN_CANDIDATES), taken in no order: a bound on the chunks
# read by a query of many fairly common words that often meet, not a ranking.
CANDIDATES_PER_RESULT = 40
MIN_CANDIDATES = 2000


def _float8(value: float) -> str:
    """A float8 literal: BM25's arithmetic in double precision, not in numeric (a decimal literal is numeric, whose
    arithmetic, for each word of each candidate, costs several times as much)."""
    return f"{float(value)!r}::float8"


def keyword_statement(query: str, where: str, params: list[Any], limit: int) -> tuple[str, list[Any]]:
    """BM25 over the ``where`` chunks' tsvectors, with document frequencies of the covered collections.

    PostgreSQL's ts_rank has no inverse document frequency: on SciFact it reaches nDCG@10 0.42
    where BM25 reaches 0.67. The frequencies come from the TermStat table (kept by triggers) and
    are summed over the collections this search covers, so other users' documents never weigh in.
    The candidates (see RARE_ROWS) are found by one GIN bitmap scan of a tsquery built here: the rarest
    words ORed (``ored``: while their rows fit the bound), then each other pairable word ANDed with the more
    common ones after it ("a & (b | c) | b & c", which the index evaluates in half the time of every pair spelled
    out). A pair with an ORed word would add no chunk, and the GIN index holds every collection's chunks: in a
    small collection, where the words are all "rare", the tsquery stays a plain OR instead of pairs the index would
    check against long postings. A second scan (``fill``, see RARE_ROWS) runs only when the rare words' chunks
    are fewer than the results asked and a common word was left out of them.
    Each candidate's term frequencies come from its tsvector narrowed to the query's words (setweight +
    ts_filter) instead of unnesting every word it holds.
    """
    rare = max(RARE_ROWS, RARE_ROWS_PER_RESULT * limit)
    cap = max(limit * CANDIDATES_PER_RESULT, MIN_CANDIDATES)
    # A candidate's columns, from the rare words' scan and from the fill's alike.
    candidate = (
        "c.id, c.document_id, c.page, c.heading, c.text, c.token_count, "
        "ts_filter(setweight(c.search_vector, 'A', q.lexemes), '{a}') AS matched"
    )
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
        ), terms AS MATERIALIZED (
            SELECT w.lexeme, coalesce(sum(t.df), 0) AS df,
                   ln(1 + (tot.n - coalesce(sum(t.df), 0) + 0.5) / (coalesce(sum(t.df), 0) + 0.5)) AS idf
            FROM words w CROSS JOIN totals tot
            LEFT JOIN {TERMSTAT} t ON t.lexeme = w.lexeme AND t.collection_id IN (SELECT id FROM scope)
            GROUP BY w.lexeme, tot.n
        ), ranked AS MATERIALIZED (
            SELECT t.lexeme, t.df, quote_literal(t.lexeme) AS quoted, row_number() OVER w AS rarity,
                   sum(t.df) OVER w - t.df < {rare} AS rare_enough,
                   sum(t.df) OVER w - t.df < {rare} AND (row_number() OVER w = 1 OR sum(t.df) OVER w <= {cap}) AS ored,
                   t.df < greatest({PAIR_DF} * tot.n, {PAIR_ROWS}) AS pairable
            FROM terms t, totals tot WHERE t.df > 0
            WINDOW w AS (ORDER BY t.df, t.lexeme)
        ), selective AS (
            SELECT nullif(array_to_string(ARRAY(
                SELECT quoted FROM ranked WHERE ored
                UNION ALL
                SELECT '(' || a.quoted || ' & (' || string_agg(b.quoted, ' | ') || '))'
                FROM ranked a JOIN ranked b ON b.rarity > a.rarity AND b.pairable
                WHERE a.pairable AND NOT a.ored GROUP BY a.rarity, a.quoted
            ), ' | '), '')::tsquery AS query,
            CASE WHEN (SELECT coalesce(sum(df), 0) FROM ranked WHERE ored) < {int(limit)}
                 THEN (SELECT quoted FROM ranked WHERE rare_enough AND NOT ored LIMIT 1)::tsquery END AS fill,
            ARRAY(SELECT lexeme FROM ranked) AS lexemes
        ), candidates AS MATERIALIZED (
            (SELECT {candidate}
             FROM {CHUNK} c, selective q
             WHERE c.search_vector @@ q.query AND {where}
             LIMIT {cap})
            UNION ALL
            (SELECT {candidate}
             FROM {CHUNK} c, selective q
             WHERE c.search_vector @@ q.fill AND (q.query IS NULL OR NOT c.search_vector @@ q.query) AND {where}
             LIMIT {int(limit)})
        ), scored AS (
            SELECT c.id, sum(t.idf * (array_length(u.positions, 1) * {_float8(BM25_K1 + 1)}) / (
                array_length(u.positions, 1)
                + {_float8(BM25_K1)} * ({_float8(1 - BM25_B)} + {_float8(BM25_B)} * c.token_count / tot.avgdl)
            )) AS score
            FROM candidates c CROSS JOIN totals tot CROSS JOIN LATERAL unnest(c.matched) u
            JOIN terms t ON t.lexeme = u.lexeme
            GROUP BY c.id
            ORDER BY score DESC, c.id
            LIMIT %s
        )
        SELECT c.id, c.document_id, (SELECT d.title FROM {DOCUMENT} d WHERE d.id = c.document_id),
               c.page, c.heading, c.text, s.score
        FROM scored s JOIN candidates c ON c.id = s.id
        ORDER BY s.score DESC, s.id
        """,
        [query, *params, *params, limit],
    )
