"""The keyword (BM25) statement as it was before issue 17 goal 2, kept to be measured side by side with today's.

Benchmarks only (bench/hybrid_keyword.py, bench/retrieval_quality.py): the app uses
``documents.search.sql.keyword_statement``. Its candidates were every chunk holding one of the query's rarest
three words or a word in under 5% of the chunks, sorted by ts_rank (a heap read and a ts_rank for each of
2,500 to 12,000 chunks at 100k chunks), the best ``pool`` then scored with BM25.
"""

from __future__ import annotations

import re
from typing import Any

from documents.search.sql import CHUNK, COLLECTION, DOCUMENT, SCOPE, TERMSTAT
from documents.search.sql import keyword_statement as keyword_statement_today

# BM25's usual constants (Robertson & Zaragoza): term-frequency saturation and length normalisation.
BM25_K1 = 1.2
BM25_B = 0.75
# Candidates are chunks holding one of the query's most telling words: the rarest few, and any
# word in under 5% of the chunks. A question's common words ("study", "effect") then only weigh
# in the score, instead of making PostgreSQL rank a large part of the table.
SELECTIVE_TERMS = 3
SELECTIVE_DF = 0.05


def keyword_statement_before(query: str, where: str, params: list[Any], limit: int) -> tuple[str, list[Any]]:
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


def keyword_statement_unbounded_or(query: str, where: str, params: list[Any], limit: int) -> tuple[str, list[Any]]:
    """Today's statement as it was until 2026-12-02: a word joined the rarer ones, ORed, whenever the rows of the
    words rarer than it were under the rare bound, however many chunks it was in itself (the candidates' LIMIT then
    took the bound's worth of its chunks in no order, before or instead of the rare words' own). Made from today's
    statement (as imported here, before a bench swaps ``sql.keyword_statement``) by taking the bound out."""
    text, values = keyword_statement_today(query, where, params, limit)
    before = re.sub(r" AND \(row_number\(\) OVER w = 1 OR sum\(t\.df\) OVER w <= \d+\) AS ored", " AS ored", text)
    if before == text:
        raise RuntimeError("sql.keyword_statement no longer says which words are ORed as this bench expects")
    return before, values
