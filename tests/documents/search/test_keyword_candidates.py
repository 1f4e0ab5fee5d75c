"""The keyword arm's candidates (sql.keyword_statement): which chunks BM25 scores, and that their scores are BM25's."""

import math

import pytest
from django.db import connection

from documents.search import search, sql
from tests.documents_factory import add_text_document as add

pytestmark = pytest.mark.django_db

TEXTS = {
    "d1": "A zebra crossed the road at dawn.",
    "d2": "Apples and bananas ripen together in the basket; apples first.",
    "d3": "Apple pie needs a hot oven.",
    "d4": "An apple a day keeps the doctor away.",
    "d5": "Banana bread tastes of summer.",
    "d6": "Cats sleep most of the afternoon.",
    "d7": "The river froze in January.",
    "d8": "Trains leave the station every hour.",
    "d9": "Violins need new strings each season.",
}
QUERY = "zebra apple banana"


@pytest.fixture
def library(user, collection):
    return {name: add(user, collection, name, text) for name, text in TEXTS.items()}


def bm25(collection, query: str) -> dict[int, float]:
    """BM25 of every chunk of ``collection`` holding a word of ``query``, computed here from the stored statistics."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT tsvector_to_array(to_tsvector('english', %s))", [query])
        words = cursor.fetchone()[0]
        cursor.execute("SELECT chunk_total, token_total FROM documents_collection WHERE id = %s", [collection.pk])
        n, tokens = cursor.fetchone()
        cursor.execute("SELECT lexeme, df FROM documents_termstat WHERE collection_id = %s AND lexeme = ANY(%s)",
                       [collection.pk, words])
        df = dict(cursor.fetchall())
        cursor.execute(
            "SELECT c.id, c.token_count, u.lexeme, array_length(u.positions, 1) FROM documents_chunk c, "
            "unnest(c.search_vector) u WHERE c.collection_id = %s AND u.lexeme = ANY(%s)", [collection.pk, words])
        rows = cursor.fetchall()
    avgdl = tokens / n
    scores: dict[int, float] = {}
    for chunk_id, length, lexeme, tf in rows:
        idf = math.log(1 + (n - df[lexeme] + 0.5) / (df[lexeme] + 0.5))
        norm = 1 - sql.BM25_B + sql.BM25_B * length / avgdl
        scores[chunk_id] = scores.get(chunk_id, 0.0) + idf * tf * (sql.BM25_K1 + 1) / (tf + sql.BM25_K1 * norm)
    return scores


def test_in_a_small_collection_every_chunk_holding_a_word_is_scored_with_bm25(user, collection, library):
    hits = search(user=user, query=QUERY, k=10, mode="keyword")
    expected = bm25(collection, QUERY)
    assert {hit.document_title for hit in hits} == {"d1", "d2", "d3", "d4", "d5"}
    assert {hit.chunk_id: hit.score for hit in hits} == pytest.approx(expected)
    assert [hit.score for hit in hits] == sorted(expected.values(), reverse=True)
    assert hits[0].document_title == "d2"  # two of the words, "apples" twice


def test_candidates_are_the_rarest_words_chunks_and_those_holding_two_words(user, collection, library, monkeypatch):
    # Bounds of a 100k-chunk table scaled down to nine chunks: the rarest word's chunks only, and pairs of words
    # in under half of the chunks.
    monkeypatch.setattr(sql, "RARE_ROWS", 1)
    monkeypatch.setattr(sql, "RARE_ROWS_PER_RESULT", 0)
    monkeypatch.setattr(sql, "PAIR_DF", 0.5)
    monkeypatch.setattr(sql, "PAIR_ROWS", 0)
    hits = search(user=user, query=QUERY, k=10, mode="keyword")
    # "zebra" is the rarest; "apple" and "banana" meet in d2 only; d3, d4 (apple) and d5 (banana) are not read.
    assert [hit.document_title for hit in hits] == ["d2", "d1"]
    expected = bm25(collection, QUERY)
    assert [hit.score for hit in hits] == pytest.approx([expected[hit.chunk_id] for hit in hits])


def test_a_word_in_most_chunks_pairs_with_no_other(user, collection, library, monkeypatch):
    monkeypatch.setattr(sql, "RARE_ROWS", 1)
    monkeypatch.setattr(sql, "RARE_ROWS_PER_RESULT", 0)
    monkeypatch.setattr(sql, "PAIR_DF", 0.3)  # apple (3 of 9 chunks) is too common to pair
    monkeypatch.setattr(sql, "PAIR_ROWS", 0)
    hits = search(user=user, query=QUERY, k=10, mode="keyword")
    assert [hit.document_title for hit in hits] == ["d1"]


def test_a_query_of_unknown_words_finds_nothing(user, collection, library):
    assert search(user=user, query="xylophones quasars", k=10, mode="keyword") == []
    assert search(user=user, query="the and of", k=10, mode="keyword") == []  # stop words only


HARBOUR = {f"h{i}": f"Boats rest in the harbour on day {i}." for i in range(1, 7)} | {
    "h7": "A zebra swam across the harbour."}


def test_a_common_word_after_a_rare_one_does_not_crowd_the_rare_ones_chunks_out(user, collection, monkeypatch):
    # "harbour" is in every chunk, "zebra" in the last one stored. The candidates' bound scaled down to three chunks:
    # ORing "harbour" with "zebra" would take three chunks of seven in no order (those stored first) and lose the
    # best one; "harbour" no longer joins the rare words once it would overflow the bound.
    for name, text in HARBOUR.items():
        add(user, collection, name, text)
    monkeypatch.setattr(sql, "RARE_ROWS", 2)
    monkeypatch.setattr(sql, "RARE_ROWS_PER_RESULT", 0)
    monkeypatch.setattr(sql, "CANDIDATES_PER_RESULT", 0)
    monkeypatch.setattr(sql, "MIN_CANDIDATES", 3)
    expected = bm25(collection, "harbour zebra")
    best = max(expected, key=expected.get)
    assert len(expected) == 7
    hits = search(user=user, query="harbour zebra", k=1, mode="keyword")
    assert [hit.chunk_id for hit in hits] == [best] and hits[0].document_title == "h7"
    assert hits[0].score == pytest.approx(expected[best])
    # Asked for more results than the rare words' chunks, the common word's own chunks make up the rest: here all.
    hits = search(user=user, query="harbour zebra", k=10, mode="keyword")
    assert hits[0].chunk_id == best and len(hits) == 7
    assert {hit.chunk_id: hit.score for hit in hits} == pytest.approx(expected)
    # The rarest word always joins: a query of the common word alone still gets the bound's chunks.
    assert len(search(user=user, query="harbour", k=10, mode="keyword")) == 3
