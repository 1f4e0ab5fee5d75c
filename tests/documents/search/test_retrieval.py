"""documents/search: vector, keyword and hybrid search, with access control inside the SQL."""

from datetime import date

import psycopg
import pytest
from django.db import connection, transaction

from documents.db import vector_cursor
from documents.models import Chunk, ChunkVector, Collection, Document, EmbeddingSpace
from documents.search import Filters, search
from documents.search import query as retrieval
from documents.spaces import backend_for, default_space, storage
from documents.spaces.vectors import write_vectors
from tests.documents_factory import add_text_document as add

pytestmark = pytest.mark.django_db

TEXTS = {
    "vacation": "Employees receive twenty-five vacation days per year. Unused vacation days expire in March.",
    "expenses": "Travel expenses are reimbursed within thirty days when receipts are submitted.",
    "security": "Laptops must use full disk encryption and a screen lock after five minutes.",
    "kitchen": "The office kitchen is cleaned every Friday afternoon by the facilities team.",
}




@pytest.fixture
def library(user, collection):
    return {name: add(user, collection, name, text) for name, text in TEXTS.items()}


@pytest.mark.parametrize("mode", retrieval.MODES)
def test_each_mode_finds_the_relevant_document_first(mode, user, library):
    hits = search(user=user, query="How many vacation days do employees get?", k=3, mode=mode)
    assert hits and hits[0].document_id == library["vacation"].pk
    assert hits[0].document_title == "vacation" and "twenty-five" in hits[0].text


def test_keyword_mode_matches_any_term_and_stems(user, library):
    hits = search(user=user, query="reimbursing receipt", k=5, mode="keyword")
    assert [h.document_id for h in hits] == [library["expenses"].pk]


def test_hybrid_fuses_both_rankings(user, library):
    hits = search(user=user, query="disk encryption on laptops", k=4, mode="hybrid")
    assert hits[0].document_id == library["security"].pk
    assert hits[0].score == pytest.approx(1.0)  # the best of both arms


def test_other_users_never_see_my_chunks(user, other_user, library):
    assert search(user=other_user, query="vacation days", k=10, mode="hybrid") == []
    own = Collection.objects.create(name="Mallory's", owner=other_user)
    add(other_user, own, "theirs", "Mallory's notes about vacation days and encryption.")
    for mode in retrieval.MODES:
        documents = {h.document_id for h in search(user=other_user, query="vacation days", k=10, mode=mode)}
        assert documents and not documents & {d.pk for d in library.values()}


def test_members_of_a_shared_collection_can_search_it(user, other_user, collection, library):
    collection.members.add(other_user)
    hits = search(user=other_user, query="kitchen cleaning", k=1)
    assert hits[0].document_id == library["kitchen"].pk


def test_filters_by_collection_document_and_metadata(user, collection, library):
    other = Collection.objects.create(name="Other", owner=user)
    tagged = add(user, other, "tagged", "Vacation rules for contractors differ.", metadata={"tags": ["contractors"]})
    in_other = search(user=user, query="vacation", k=10, filters=Filters(collections=(other.pk,)))
    assert {h.document_id for h in in_other} == {tagged.pk}
    only_doc = search(user=user, query="vacation", k=10, filters=Filters(documents=(library["kitchen"].pk,)))
    assert {h.document_id for h in only_doc} <= {library["kitchen"].pk}
    by_tag = search(user=user, query="vacation", k=10, filters=Filters(metadata={"tags": ["contractors"]}))
    assert {h.document_id for h in by_tag} == {tagged.pk}


def test_each_collection_is_searched_in_its_active_space_only(user, collection, library):
    other = EmbeddingSpace.objects.create(name="hashing-64", backend="hashing", model="hashing-64", dimensions=64)
    storage.create_partition(other)
    storage.create_index(other, "cosine")
    Collection.objects.filter(pk=collection.pk).update(active_space=other)
    # Its vectors are in the space it left: not compared with a query of the space it searches now.
    assert search(user=user, query="vacation days", k=5, mode="vector") == []
    assert search(user=user, query="vacation days", k=5, mode="keyword")  # text needs no model
    # Its vectors in that space (as a migration's backfill writes them): the query is embedded by its model.
    backend = backend_for(other)
    chunks = list(Chunk.objects.filter(collection=collection))
    write_vectors(space=other, rows=[
        (chunk.pk, chunk.collection_id, chunk.document_id, "cosine", vector)
        for chunk, vector in zip(chunks, backend.embed_documents([c.text for c in chunks]), strict=True)
    ])
    hits = search(user=user, query="How many vacation days do employees get?", k=5, mode="vector")
    assert hits[0].document_id == library["vacation"].pk and len(hits) == len(chunks)


def test_collections_on_different_spaces_are_merged_on_cosine_similarity(user, collection, library):
    other = EmbeddingSpace.objects.create(name="hashing-384-b", backend="hashing", model="hashing-384",
                                          fingerprint="another", dimensions=384)
    storage.create_partition(other)
    storage.create_index(other, "cosine")
    small = Collection.objects.create(name="Small", owner=user, active_space=other)
    contract = add(user, small, "contract", "Contractors receive ten vacation days per year.")
    assert ChunkVector.objects.filter(document_id=contract.pk, space=other).count() == contract.chunk_count > 0
    hits = search(user=user, query="vacation days per year", k=10, mode="vector")
    assert {library["vacation"].pk, contract.pk} <= {h.document_id for h in hits}
    assert hits == sorted(hits, key=lambda h: (-h.score, h.chunk_id))  # one scale
    # The precomputed vector is the default space's: the other space's arm embeds the text itself.
    vector = backend_for(default_space()).embed_query("vacation days per year")
    assert search(user=user, query="vacation days per year", k=10, mode="vector", query_vector=vector) == hits


def test_empty_and_hostile_queries_behave(user, library):
    assert search(user=user, query="", k=5) == []
    assert search(user=user, query="   ", k=5) == []
    for query in ["'; DROP TABLE documents_chunk; --", "ünïcödé ✓ 漢字", "x" * 100_000, "&|!():*"]:
        for mode in retrieval.MODES:
            search(user=user, query=query, k=5, mode=mode)  # no exception
    assert search(user=user, query="vacation", k=1)


def test_unrelated_question_is_not_marked_relevant(user, library):
    hits = search(user=user, query="quantum chromodynamics lattice gauge", k=3, mode="hybrid")
    assert hits and not any(h.relevant for h in hits)


def statements_sent(run) -> list[tuple[str, list]]:
    """Each statement ``run()`` sends to PostgreSQL, in order, with its own parameters."""
    sent = []

    def record(execute, sql, params, many, context):
        sent.append((sql, list(params or [])))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        run()
    return sent


def round_trips(run, monkeypatch) -> int:
    """How many times ``run()`` waits for PostgreSQL's answer: once for each statement sent on its own, once for
    each psycopg pipeline (its statements go with the Sync that ends it: retrieval._fetch_together)."""
    trips = []
    pipeline = psycopg.Connection.pipeline

    def counted(self):
        trips.append("pipeline")
        return pipeline(self)

    def record(execute, sql, params, many, context):
        if context["connection"].connection.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF:
            trips.append(sql)
        return execute(sql, params, many, context)

    with monkeypatch.context() as patched, connection.execute_wrapper(record):
        patched.setattr(psycopg.Connection, "pipeline", counted)
        run()
    return len(trips)


@pytest.mark.parametrize("distance", ["cosine", "l2", "ip"])
def test_the_vector_statement_search_sends_is_served_by_the_distances_hnsw_index(distance, user, collection, library):
    Collection.objects.filter(pk=collection.pk).update(distance=distance)
    # Broad: the filters (the chat page's collection, file type and date) keep every chunk.
    broad = Filters(collections=(collection.pk,), content_types=("text/plain",), created_after=date(2000, 1, 1))
    question = "How many vacation days do employees get?"
    hits = []
    statements = statements_sent(lambda: hits.extend(search(user=user, query=question, k=5, mode="vector",
                                                            filters=broad)))
    assert hits[0].document_id == library["vacation"].pk and -1.0 <= hits[0].score <= 1.0
    # The statement that searched the collection's chunks by vector: the last one (for l2 and ip, after
    # the speculated cosine one, in a second round trip), and the scope statement before it, which set
    # its transaction-local settings.
    at = max(i for i, (sql, _) in enumerate(statements) if "%s::vector" in sql)
    scope = next(s for s in reversed(statements[:at]) if "set_config('rag.collections'" in s[0])
    sql, params = statements[at]
    with vector_cursor() as cursor:
        # The same statements, sent the same way (one pipeline, so one transaction, with the scope first),
        # the vector one EXPLAINed. On this tiny table a sort of all rows is cheapest, so sorts (and
        # sequential scans) are forbidden, as the hand-written EXPLAIN this test replaces did: the HNSW
        # index is then the only way to the statement's ORDER BY ... LIMIT, and the test fails if the
        # SQL cannot use it (operator, partial index predicate, order). The outer re-sort is disabled
        # in every plan alike. Whether the planner prefers the index at scale (it does from about 5,000
        # chunks here) is for the benchmarks, which check the plan at 100k rows.
        _, _, plan, [(iterative_scan, ef_search)] = retrieval._fetch_together(cursor.db, [
            ("SELECT set_config('enable_seqscan', 'off', true), set_config('enable_sort', 'off', true)", []),
            scope,
            (f"EXPLAIN {sql}", params),
            ("SELECT current_setting('hnsw.iterative_scan'), current_setting('hnsw.ef_search')::int", []),
        ])
    plan = "\n".join(row[0] for row in plan)
    space = default_space()
    name = f"Index Scan using {storage.index_name(space, distance)} on {storage.partition_name(space)}"
    assert name in plan, plan
    # Planned under the search's own settings: an iterative scan keeps walking the graph past filtered rows.
    assert iterative_scan == "relaxed_order" and ef_search >= 5


def test_chunks_take_their_collections_distance(user, tmp_path):
    l2 = Collection.objects.create(name="Euclid", owner=user, distance="l2")
    ip = Collection.objects.create(name="Dot", owner=user, distance="ip")
    a = add(user, l2, "a", "Submarines dive below the waves with ballast tanks.")
    b = add(user, ip, "b", "Ballast tanks let a submarine dive and surface.")
    assert set(ChunkVector.objects.filter(document=a).values_list("distance", flat=True)) == {"l2"}
    assert set(ChunkVector.objects.filter(document=b).values_list("distance", flat=True)) == {"ip"}
    hits = search(user=user, query="submarine ballast tanks", k=5, mode="vector")
    assert {h.document_id for h in hits} == {a.pk, b.pk}
    assert hits == sorted(hits, key=lambda h: -h.score)  # merged on one scale


@pytest.mark.parametrize("write", ["save", "queryset update", "raw SQL"])
def test_changing_a_collections_distance_moves_its_chunks_whatever_writes_it(user, collection, library, write):
    assert ChunkVector.objects.filter(collection=collection).exclude(distance="cosine").count() == 0
    if write == "save":
        collection.distance = "ip"
        collection.save()
    elif write == "queryset update":
        Collection.objects.filter(pk=collection.pk).update(distance="ip")
    else:
        with connection.cursor() as cursor:
            cursor.execute("UPDATE documents_collection SET distance = 'ip' WHERE id = %s", [collection.pk])
    assert ChunkVector.objects.filter(collection=collection).count() > 0
    assert set(ChunkVector.objects.filter(collection=collection).values_list("distance", flat=True)) == {"ip"}
    assert search(user=user, query="vacation days", k=1, mode="vector")[0].document_id == library["vacation"].pk


def test_a_precomputed_query_vector_gives_the_same_hits_as_the_query_text(user, library):
    from documents import embeddings

    question = "How many vacation days do employees get?"
    vector = embeddings.get_backend().embed_query(question)
    for mode in retrieval.MODES:
        assert search(user=user, query=question, k=3, mode=mode, query_vector=vector) == search(
            user=user, query=question, k=3, mode=mode
        )


def test_a_query_vector_is_used_instead_of_embedding_the_text(user, library):
    from documents import embeddings

    vector = embeddings.get_backend().embed_query("office kitchen cleaned on Friday")
    hits = search(user=user, query="vacation days", k=1, mode="vector", query_vector=vector)
    assert hits[0].document_id == library["kitchen"].pk


def test_a_query_vector_of_the_wrong_size_is_refused(user, library):
    with pytest.raises(ValueError, match="384 finite numbers"):
        search(user=user, query="vacation", k=1, mode="vector", query_vector=[0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        search(user=user, query="vacation", k=1, mode="vector", query_vector=[float("nan")] * 384)


@pytest.mark.parametrize("mode", retrieval.MODES)
def test_a_search_is_one_round_trip(mode, user, library, monkeypatch):
    hits = []
    trips = round_trips(lambda: hits.extend(search(user=user, query="vacation days", k=3, mode=mode)), monkeypatch)
    assert hits and trips == 1  # the settings, the distances and every query, sent at once


def test_collections_of_other_distances_take_a_second_round_trip(user, collection, library, monkeypatch):
    euclid = Collection.objects.create(name="Euclid", owner=user, distance="l2")
    add(user, euclid, "contract", "Contractors receive ten vacation days per year.")
    hits = []
    trips = round_trips(lambda: hits.extend(search(user=user, query="vacation days", k=10, mode="hybrid")),
                        monkeypatch)
    assert trips == 2
    assert {library["vacation"].pk, Document.objects.get(title="contract").pk} <= {h.document_id for h in hits}


def test_a_collection_without_the_default_distance_is_searched_in_its_own_index(user, collection, library):
    Collection.objects.filter(pk=collection.pk).update(distance="ip")
    hits = search(user=user, query="How many vacation days do employees get?", k=2, mode="vector")
    assert hits[0].document_id == library["vacation"].pk
    # Vectors left in the cosine index after a distance change are not searched (as before).
    ChunkVector.objects.filter(collection=collection).update(distance="cosine")
    assert search(user=user, query="vacation days", k=2, mode="vector") == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", retrieval.MODES)
def test_a_search_finds_the_same_in_autocommit_as_in_the_callers_transaction(mode, user, collection):
    for name, text in TEXTS.items():
        add(user, collection, name, text)
    question = "How many vacation days do employees get?"
    alone = search(user=user, query=question, k=4, mode=mode)  # the pipeline's own implicit transaction
    with transaction.atomic():
        inside = search(user=user, query=question, k=4, mode=mode)
    assert alone and alone == inside


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", retrieval.MODES)
def test_a_connection_that_never_prepares_finds_the_same(mode, user, collection, settings):
    # DATABASE_PREPARE_THRESHOLD=0 (a pooler that cannot keep prepared statements): nothing is prepared on the
    # server, every search is parsed again, and the hits are the same.
    assert settings.DATABASES["default"]["OPTIONS"]["prepare_threshold"] == settings.DATABASE_PREPARE_THRESHOLD
    for name, text in TEXTS.items():
        add(user, collection, name, text)
    question = "How many vacation days do employees get?"

    def searches_and_prepared(threshold):
        connection.close()
        connection.settings_dict["OPTIONS"]["prepare_threshold"] = threshold
        hits = [search(user=user, query=question, k=4, mode=mode) for _ in range(8)]  # past the threshold
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_prepared_statements")
            return hits, cursor.fetchone()[0]

    try:
        prepared, statements = searches_and_prepared(settings.DATABASE_PREPARE_THRESHOLD)
        unprepared, none = searches_and_prepared(None)
    finally:
        connection.close()
        connection.settings_dict["OPTIONS"]["prepare_threshold"] = settings.DATABASE_PREPARE_THRESHOLD
    assert statements > 0 and none == 0
    assert prepared[0] and all(hits == prepared[0] for hits in prepared + unprepared)


@pytest.mark.django_db(transaction=True)
def test_search_settings_do_not_outlive_the_search(user, collection):
    add(user, collection, "vacation", TEXTS["vacation"])
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('hnsw.ef_search', true)")
        before = cursor.fetchone()[0]
    assert search(user=user, query="vacation days", k=1, mode="vector")
    with connection.cursor() as cursor:  # autocommit: the search ran in its own implicit transaction
        cursor.execute("SELECT current_setting('hnsw.ef_search', true), current_setting('hnsw.iterative_scan', true)")
        assert cursor.fetchone() == (before if before is not None else "40", "off")


def _plans(text: str) -> tuple[int, int]:
    """(generic, custom) plans of this session's prepared statements that hold ``text`` (pg_prepared_statements)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(generic_plans), 0), coalesce(sum(custom_plans), 0) "
                       "FROM pg_prepared_statements WHERE strpos(statement, %s) > 0", [text])
        generic, custom = cursor.fetchone()
    return int(generic), int(custom)


def _vector_plans() -> tuple[int, int]:
    return _plans("WITH nearest AS MATERIALIZED")


def _on_the_cached_plan(plans, searches, collection) -> list:
    """Searches of the wide ``collection`` run on the statement's cached plan (``plans``: its (generic, custom) plan
    counts), and return the rows a plan made for the search does (a filter that keeps every chunk makes it plan for
    itself)."""
    before = plans()
    cached = searches(Filters(collections=(collection.pk,)))
    generic, custom = plans()
    assert generic - before[0] >= 3 and custom == before[1]  # every prepared run on the cached plan
    planned = searches(Filters(collections=(collection.pk,), content_types=("text/plain",)), times=1)
    assert [(h.chunk_id, round(h.score, 6)) for h in cached] == [(h.chunk_id, round(h.score, 6)) for h in planned]
    return cached


def _planned_for_itself(plans, searches, narrow) -> list:
    """Searches of the narrow collection ``narrow`` are planned for themselves, never run on the cached plan."""
    generic, custom = plans()
    hits = searches(Filters(collections=(narrow.pk,)))
    assert plans()[0] == generic and plans()[1] >= custom + 3
    return hits


def test_a_wide_search_runs_its_vector_arm_on_the_cached_plan_and_a_narrow_one_is_planned_for_itself(user, collection):
    # "Handbook" holds 10 of the space's 11 chunks, "Memo" 1: a search of the first takes the HNSW index whatever
    # its collections, one of the second must be planned for them (the exact scan of a small collection).
    narrow = Collection.objects.create(name="Memo", owner=user)
    for number in range(10):
        add(user, collection, f"handbook-{number}", f"Chapter {number}: {TEXTS['vacation']} {TEXTS['kitchen']}")
    memo = add(user, narrow, "memo", TEXTS["security"])
    wide = Filters(collections=(collection.pk,))
    question = "How many vacation days do employees get?"

    def searches(filters, times=8, mode="vector"):  # past psycopg's prepare_threshold (5): statements are prepared
        return [search(user=user, query=question, k=3, mode=mode, filters=filters)
                for _ in range(times)][-1]

    # Before the partition's first ANALYZE its row count is unknown: planned for each search.
    searches(wide)
    assert _vector_plans()[0] == 0
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {storage.partition_name(default_space())}")
    _on_the_cached_plan(_vector_plans, searches, collection)
    # The narrow collection, a tenth of the space: planned for itself, and its one chunk found.
    assert [h.document_id for h in _planned_for_itself(_vector_plans, searches, narrow)] == [memo.pk]
    # Both collections together are wide too.
    generic, custom = _vector_plans()
    searches(Filters(collections=(collection.pk, narrow.pk)), times=2)
    assert _vector_plans() == (generic + 2, custom)
    # A hybrid search's vector arm too (its own statement: another LIMIT).
    hybrid = searches(wide, mode="hybrid")
    assert _vector_plans()[0] >= generic + 2 + 3 and _vector_plans()[1] == custom
    assert hybrid[0].document_id in {d.pk for d in Document.objects.filter(collection=collection)}


def _keyword_plans() -> tuple[int, int]:
    return _plans("WITH scope AS (")


@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
def test_a_wide_search_runs_its_keyword_statement_on_the_cached_plan_and_a_narrow_one_is_planned_for_itself(
    mode, user, collection,
):
    # "Handbook" holds 10 of the 11 chunks, "Memo" 1. A narrow search's plan combines the GIN index with the
    # collection index; a wide one's filters the GIN index's chunks: only the wide one may run on the cached plan.
    narrow = Collection.objects.create(name="Memo", owner=user)
    for number in range(10):
        add(user, collection, f"handbook-{number}", f"Chapter {number}: {TEXTS['vacation']} {TEXTS['kitchen']}")
    memo = add(user, narrow, "memo", f"{TEXTS['security']} Vacation requests go to the manager.")
    question = "vacation days encryption"

    def searches(filters, times=8):  # past psycopg's prepare_threshold (5): statements are prepared
        return [search(user=user, query=question, k=3, mode=mode, filters=filters) for _ in range(times)][-1]

    with connection.cursor() as cursor:  # the chunk table's row count, as the rule reads it (pg_class.reltuples)
        cursor.execute(f"ANALYZE {Chunk._meta.db_table}")
    cached = _on_the_cached_plan(_keyword_plans, searches, collection)
    assert cached and {h.document_id for h in cached} <= {d.pk for d in Document.objects.filter(collection=collection)}
    # The narrow collection: planned for itself, and its chunk found.
    assert [h.document_id for h in _planned_for_itself(_keyword_plans, searches, narrow)] == [memo.pk]
