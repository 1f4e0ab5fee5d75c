"""documents/search/indexes.py and `manage.py vector_index`: HNSW or IVFFlat per distance, and search on either."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.db import connection

from documents import services, store
from documents.chunking import ChunkDraft
from documents.models import Document
from documents.search import indexes
from documents.search import query as retrieval
from documents.spaces import default_space

pytestmark = pytest.mark.django_db(transaction=True)  # CREATE/DROP INDEX, as the command runs them

ROWS = 1200  # enough for IVFFlat's k-means (documents.search.indexes.IVFFLAT_MIN_ROWS)


def stored_vectors(user, collection, rows: int, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """``rows`` chunks of random unit vectors in one document; (vectors, their chunk ids in order)."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(rows, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    document = services.document_create(owner=user, collection=collection, enqueue=False, filename="v.txt",
                                      file=ContentFile(b"vectors", name="v.txt"))
    drafts = [ChunkDraft(ordinal=i, text=f"chunk {i}", page=None, heading="", char_start=0, char_end=7,
                         token_count=2) for i in range(rows)]
    store.store_chunks(document=document, drafts=drafts, vectors=vectors)
    Document.objects.filter(pk=document.pk).update(status=Document.Status.READY)
    ids = list(document.chunks.order_by("ordinal").values_list("pk", flat=True))
    return vectors, ids


def vector_indexes(distance: str) -> dict[str, str]:
    """The vector indexes of ``distance`` in the default space that exist now: name → kind."""
    names = {indexes.index_name(kind, distance, default_space()): kind for kind in indexes.KINDS}
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relkind = 'i' AND relname = ANY(%s)", [list(names)])
        return {row[0]: names[row[0]] for row in cursor.fetchall()}


def hnsw(distance: str) -> str:
    return indexes.index_name("hnsw", distance, default_space())


def ivfflat(distance: str) -> str:
    return indexes.index_name("ivfflat", distance, default_space())


def exact_top(vectors: np.ndarray, ids: list[int], query: np.ndarray, k: int) -> list[int]:
    return [ids[i] for i in np.argsort(-(vectors @ query))[:k]]


def test_ivfflat_is_refused_before_there_are_rows_to_learn_its_lists_from(user, collection):
    stored_vectors(user, collection, 50)
    with pytest.raises(CommandError, match=r"there are 50 cosine vectors in space hashing-384 \(at least 1,000"):
        call_command("vector_index", "--type", "ivfflat")
    assert vector_indexes("cosine") == {hnsw("cosine"): "hnsw"}  # left as it was


def test_ivfflat_replaces_hnsw_and_searches_probe_the_square_root_of_its_lists(user, collection, capsys):
    vectors, ids = stored_vectors(user, collection, ROWS)
    call_command("vector_index", "--type", "ivfflat", "--lists", "16")
    out = capsys.readouterr().out
    assert f"{ivfflat('cosine')}: ivfflat over 1,200 cosine vectors of space hashing-384, lists=16" in out
    assert "probe √lists = 4 lists" in out
    assert vector_indexes("cosine") == {ivfflat("cosine"): "ivfflat"}

    # The search's own first statement sets the probes, read from the index (√16), for the statements after it.
    statements = [retrieval._scope_sql(user, retrieval.Filters(), 100),
                  ("SELECT current_setting('ivfflat.probes'), current_setting('ivfflat.iterative_scan')", [])]
    _, settings_seen = retrieval._fetch_together(connection, statements)
    assert settings_seen == [("4", "relaxed_order")]

    # The statement search() sends is served by the IVFFlat index.
    query = vectors[7]
    hits = retrieval.search(user=user, query="q", k=10, mode="vector", query_vector=query)
    assert hits[0].chunk_id == ids[7]  # its own vector is nearest
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")  # 1,200 rows: the planner would rather read them all
        vector_sql, params = retrieval._vector_sql(retrieval.Filters(), 10, query, default_space(), "cosine")
        plan = retrieval._fetch_together(cursor.db, [retrieval._scope_sql(user, retrieval.Filters(), 100),
                                                  ("EXPLAIN " + vector_sql, params)])[1]
        cursor.execute("RESET enable_seqscan")
    assert any(f"Index Scan using {ivfflat('cosine')}" in row[0] for row in plan), plan


def test_with_every_list_probed_ivfflat_finds_the_exact_neighbours(user, collection, settings):
    vectors, ids = stored_vectors(user, collection, ROWS, seed=1)
    call_command("vector_index", "--type", "ivfflat", "--lists", "8")
    settings.IVFFLAT_PROBES = 8
    rng = np.random.default_rng(2)
    for query in rng.normal(size=(5, 384)).astype(np.float32):
        query /= np.linalg.norm(query)
        hits = retrieval.search(user=user, query="q", k=10, mode="vector", query_vector=query)
        assert [hit.chunk_id for hit in hits] == exact_top(vectors, ids, query, 10)


def test_hnsw_comes_back_as_the_migrations_define_it(user, collection, capsys):
    stored_vectors(user, collection, ROWS)
    call_command("vector_index", "--type", "ivfflat")
    call_command("vector_index", "--type", "hnsw", "--maintenance-work-mem", "64MB", "--workers", "0")
    assert f"{hnsw('cosine')}: hnsw over 1,200 cosine vectors of space hashing-384" in capsys.readouterr().out
    assert vector_indexes("cosine") == {hnsw("cosine"): "hnsw"}
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [hnsw("cosine")])
        definition = cursor.fetchone()[0]
    assert "USING hnsw (((embedding)::vector(384)) vector_cosine_ops) WITH (m='16', ef_construction='64')" in definition
    assert "WHERE ((distance)::text = 'cosine'::text)" in definition


def test_lists_follow_pgvectors_rule():
    assert [indexes.ivfflat_lists(n) for n in (500, 100_000, 1_000_000, 4_000_000)] == [1, 100, 1000, 2000]
    assert [indexes.ivfflat_probes(n) for n in (1, 100, 1000)] == [1, 10, 32]


def test_at_a_few_thousand_vectors_search_uses_the_spaces_hnsw_index_and_filtered_search_returns_k(user, collection):
    """The planner's own choice (no enable_* forced): the statement search() sends orders by the space's index
    expression, so its HNSW index serves it; narrowed to a small collection or by metadata, every k comes back."""
    from documents.models import Chunk, Collection

    vectors, ids = stored_vectors(user, collection, 6000)
    rare = Collection.objects.create(name="Rare", owner=user)
    rare_vectors, rare_ids = stored_vectors(user, rare, 40, seed=3)
    Chunk.objects.filter(collection=rare).update(metadata={"tags": ["rare"]})
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE documents_chunkvector")
    query = vectors[11]
    vector_sql, params = retrieval._vector_sql(retrieval.Filters(), 10, query, default_space(), "cosine")
    with connection.cursor() as cursor:
        _, plan = retrieval._fetch_together(cursor.db, [retrieval._scope_sql(user, retrieval.Filters(), 100),
                                                     ("EXPLAIN " + vector_sql, params)])
    plan = "\n".join(row[0] for row in plan)
    assert f"Index Scan using {hnsw('cosine')}" in plan, plan
    hits = retrieval.search(user=user, query="q", k=10, mode="vector", query_vector=query)
    assert hits[0].chunk_id == ids[11] and len(hits) == 10
    for filters in (retrieval.Filters(collections=(rare.pk,)), retrieval.Filters(metadata={"tags": ["rare"]})):
        hits = retrieval.search(user=user, query="q", k=10, mode="vector", query_vector=rare_vectors[0],
                                filters=filters)
        assert len(hits) == 10 and hits[0].chunk_id == rare_ids[0]
        assert [hit.chunk_id for hit in hits] == exact_top(rare_vectors, rare_ids, rare_vectors[0], 10)
