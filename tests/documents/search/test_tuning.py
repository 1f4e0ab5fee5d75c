"""documents/search/tuning.py: ef_search scaled with the index's rows and k, HNSW build parameters by size."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from documents.search import search, tuning
from tests.documents.search.test_indexes import hnsw, stored_vectors, vector_indexes
from tests.documents_factory import add_text_document as add


@pytest.fixture(autouse=True)
def auto(settings):
    settings.HNSW_EF_SEARCH = 0  # the rule, whatever the environment says
    settings.HNSW_EF_SEARCH_BASE = 100
    tuning.forget_rows()
    yield
    tuning.forget_rows()


@pytest.mark.parametrize(
    ("rows", "k", "m", "expected"),
    [
        (0, 10, 16, 100),
        (10_000, 10, 16, 100),
        (100_000, 10, 16, 100),
        (1_000_000, 10, 16, 317),
        (10_000_000, 10, 16, 1000),
        (10_000, 50, 16, 100),
        (100_000, 50, 16, 100),
        (1_000_000, 50, 16, 317),
        (10_000, 80, 16, 160),
        (10_000, 1000, 16, 1000),
        # the denser graphs vector_index builds for large spaces (build_parameters) need a narrower search
        (1_000_000, 10, 24, 141),
        (10_000_000, 10, 32, 250),
        (100_000, 10, 24, 100),  # never below the base
        (1_000_000, 100, 24, 200),  # nor below 2k
        (1_000_000, 10, 8, 317),  # a sparser graph than the reference gets the reference's width
    ],
)
def test_ef_search_at_each_scale(rows, k, m, expected):
    assert tuning.ef_search(rows, k, m) == expected


def test_ef_search_never_falls_as_rows_or_k_grow_nor_rises_with_m():
    sizes = [0, 1_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 3_000_000, 10_000_000, 100_000_000]
    for m in (16, 24, 32):
        for k in (1, 10, 50, 200, 1000):
            chosen = [tuning.ef_search(rows, k, m) for rows in sizes]
            assert chosen == sorted(chosen) and all(k <= ef <= 1000 for ef in chosen)
        for rows in sizes:
            chosen = [tuning.ef_search(rows, k, m) for k in (1, 10, 50, 100, 300, 600)]
            assert chosen == sorted(chosen)
    for rows in sizes:
        chosen = [tuning.ef_search(rows, 10, m) for m in (4, 16, 24, 32, 48)]
        assert chosen == sorted(chosen, reverse=True)


def test_settings_override_the_rule(settings):
    settings.HNSW_EF_SEARCH_BASE = 40
    assert tuning.ef_search(100_000, 10) == 40 and tuning.ef_search(400_000, 10) == 80
    settings.HNSW_EF_SEARCH = 64  # fixed: neither the rows nor k change it
    assert {tuning.ef_search(rows, k) for rows in (0, 1_000_000, 10**8) for k in (10, 50)} == {64}
    assert tuning.search_ef(10) == 64  # and no lookup is needed (no database here)
    settings.HNSW_EF_SEARCH = 5000
    assert tuning.ef_search(0, 10) == 1000  # pgvector's maximum


def test_build_parameters_by_size():
    assert tuning.build_parameters(0) == tuning.BuildParameters(m=16, ef_construction=64)  # the migrations'
    assert tuning.build_parameters(499_999) == tuning.BuildParameters(m=16, ef_construction=64)
    assert tuning.build_parameters(1_000_000) == tuning.BuildParameters(m=24, ef_construction=128)
    assert tuning.build_parameters(10_000_000) == tuning.BuildParameters(m=32, ef_construction=200)


@pytest.mark.django_db(transaction=True)
def test_a_search_runs_with_the_ef_search_of_the_estimated_rows(user, collection, monkeypatch):
    add(user, collection, "vacation", "Employees get twenty five vacation days a year.")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE documents_chunkvector")
    # The planner's estimate of the space's HNSW index, read from pg_class. (Not through the per-process cache: the
    # test worker's thread may be filling it from another test's task meanwhile.)
    assert tuning.read_estimated_rows(collection.active_space_id) == 1
    monkeypatch.setattr(tuning, "estimated_rows", lambda: 400_000)  # as if the index were large

    def ef_after(k: int, mode: str = "vector") -> int:
        with transaction.atomic():  # the search's SET LOCAL lasts until the caller's transaction ends
            assert search(user=user, query="vacation days", k=k, mode=mode)
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_setting('hnsw.ef_search')::int")
                return cursor.fetchone()[0]

    assert ef_after(10) == tuning.ef_search(400_000, 10) == 200
    assert ef_after(400) == 800  # 2k
    monkeypatch.setattr(tuning, "estimated_rows", lambda: 0)
    assert ef_after(10) == 100
    assert ef_after(5, mode="hybrid") == 100  # the hybrid arm fetches RETRIEVAL_CANDIDATES (50): 2 × 50


@pytest.mark.django_db(transaction=True)
def test_the_estimate_is_cached_and_a_rebuild_forgets_it(user, collection):
    stored_vectors(user, collection, 30)
    before = tuning.estimated_rows()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE documents_chunkvector")
    assert before != 30 and tuning.estimated_rows() == before  # cached for ROWS_TTL_SECONDS
    call_command("vector_index", "--distance", "cosine")  # rebuilds with the size's m / ef_construction, analyses
    assert vector_indexes("cosine") == {hnsw("cosine"): "hnsw"}
    assert (tuning.estimated_rows(), tuning.estimated_m()) == (30, 16)
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = %s", [hnsw("cosine")])
        assert sorted(cursor.fetchone()[0]) == ["ef_construction=64", "m=16"]
    call_command("vector_index", "--distance", "cosine", "--m", "24", "--ef-construction", "80")  # as at 1M rows
    assert (tuning.estimated_rows(), tuning.estimated_m()) == (30, 24)
    assert tuning.read_estimated_index() == (30, 24)
