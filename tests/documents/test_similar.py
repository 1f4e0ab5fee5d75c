"""Similar documents and "more like this" passages: document vectors, ranking, access control, filters, the API."""

from __future__ import annotations

import datetime

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from core.models import ApiToken
from documents import pipeline, services
from documents.models import Chunk, ChunkVector, Collection, Document, DocumentVector, EmbeddingSpace
from documents.similar import (
    SimilarFilters,
    document_vector_write,
    document_vectors_rebuild,
    similar_documents,
    similar_passages,
)
from documents.spaces import backend_for, storage
from documents.spaces.document_index import document_index_exists, document_index_name
from documents.spaces.vectors import write_vectors
from tests.documents.topics import TOPICS, add_halves, half, ids
from tests.documents_factory import add_text_document

pytestmark = pytest.mark.django_db


def chunk_vectors(document: Document, space_id: int | None = None) -> np.ndarray:
    """The document's chunk vectors in ``space_id`` (default: its collection's active space), in chunk order."""
    space_id = space_id or document.collection.active_space_id
    rows = ChunkVector.objects.filter(document=document, space_id=space_id).order_by("chunk_id")
    return np.array([np.asarray(row.embedding, dtype=np.float32) for row in rows])


@pytest.fixture
def halves(user, collection):
    return add_halves(user, collection)


def test_storing_a_document_writes_its_normalised_mean_vector(user, collection):
    document = add_text_document(
        user,
        collection,
        "long",
        "\n\n".join(
            f"Part {i}: " + "the onboarding checklist covers laptops, accounts and badges. " * 40 for i in range(3)
        ),
    )
    chunks = chunk_vectors(document)
    assert len(chunks) > 1
    stored = DocumentVector.objects.get(document=document)
    mean = chunks.mean(axis=0)
    assert np.allclose(np.asarray(stored.embedding), mean / np.linalg.norm(mean), atol=1e-5)
    assert (stored.collection_id, stored.space_id) == (collection.pk, collection.active_space_id)
    # The space's own partial index, made by its first document.
    assert document_index_exists(collection.active_space)


def test_a_vector_of_another_length_than_its_space_is_refused(user, collection, halves):
    first, _ = halves["chess"]
    with pytest.raises(ValueError, match="64-dimensional vectors for space"):
        document_vector_write(
            document_id=first.pk, collection_id=collection.pk, vectors=np.ones((2, 64), dtype=np.float32)
        )
    assert len(DocumentVector.objects.get(document=first).embedding) == collection.active_space.dimensions


def test_each_half_finds_its_other_half_first(user, halves):
    for first, second in halves.values():
        assert ids(similar_documents(user=user, document=first, k=5))[0] == second.pk
        assert ids(similar_documents(user=user, document=second, k=5))[0] == first.pk


def test_the_document_itself_is_never_similar_to_itself(user, halves):
    first, _ = halves["chess"]
    assert first.pk not in ids(similar_documents(user=user, document=first, k=50))
    assert len(similar_documents(user=user, document=first, k=50)) == 2 * len(TOPICS) - 1


def test_a_reingested_document_gets_its_new_vector(user, collection, halves):
    first, second = halves["bakery"]
    # The file now says what the glacier notes say (as if the parser had improved): its chunks and vector follow.
    first.file.save("x.txt", ContentFile(half("glacier", TOPICS["glacier"], 0).encode()), save=True)
    pipeline.document_ingest(document_id=first.pk)
    assert DocumentVector.objects.filter(document=first).count() == 1
    assert ids(similar_documents(user=user, document=first, k=3))[0] in {d.pk for d in halves["glacier"]}


def test_a_deleted_document_takes_its_vector_with_it(user, halves):
    first, second = halves["sailing"]
    services.document_delete(document=first, actor=user)
    assert not DocumentVector.objects.filter(document_id=first.pk).exists()
    assert first.pk not in ids(similar_documents(user=user, document=second, k=50))


def test_near_duplicates_are_flagged_not_hidden(user, collection, halves):
    first, _ = halves["orchard"]
    copy = add_text_document(user, collection, "orchard-copy", half("orchard", TOPICS["orchard"], 0) + " Again.")
    found = similar_documents(user=user, document=first, k=5)
    assert found[0].document_id == copy.pk and found[0].near_duplicate and found[0].score >= 0.98
    assert not any(hit.near_duplicate for hit in found[1:])


def test_the_same_file_in_another_collection_is_a_near_duplicate(user, collection, halves):
    first, _ = halves["volcano"]
    elsewhere = Collection.objects.create(name="Elsewhere", owner=user)
    same = add_text_document(user, elsewhere, "volcano-0", half("volcano", TOPICS["volcano"], 0))
    assert same.sha256 == first.sha256
    top = similar_documents(user=user, document=first, k=1)[0]
    assert (top.document_id, top.near_duplicate, top.collection) == (same.pk, True, "Elsewhere")


# ---------------------------------------------------------------------------------------------------------
# Access control


@pytest.fixture
def private_twin(other_user, halves):
    """The other user's private copy of the chess topic's second half, in their own collection."""
    theirs = Collection.objects.create(name="Mallory's", owner=other_user)
    return add_text_document(other_user, theirs, "chess-private", half("chess", TOPICS["chess"], 1))


def test_documents_outside_the_readable_collections_never_appear(user, other_user, halves, private_twin):
    first, second = halves["chess"]
    assert private_twin.pk not in ids(similar_documents(user=user, document=first, k=50))
    # Mallory sees only her own documents, although Alice's are nearer hers.
    assert ids(similar_documents(user=other_user, document=private_twin, k=50)) == []


def test_a_removed_member_no_longer_sees_the_collection(user, other_user, collection, halves, private_twin):
    collection.members.add(other_user)
    first, second = halves["chess"]
    assert set(ids(similar_documents(user=other_user, document=private_twin, k=2))) == {first.pk, second.pk}
    collection.members.remove(other_user)
    assert ids(similar_documents(user=other_user, document=private_twin, k=50)) == []


def test_a_document_moved_to_a_private_collection_disappears_for_the_old_members(
    user,
    other_user,
    collection,
    halves,
    private_twin,
):
    collection.members.add(other_user)
    first, second = halves["chess"]
    hidden = Collection.objects.create(name="Alice only", owner=user)
    Document.objects.filter(pk=second.pk).update(collection=hidden)  # any write path: the trigger follows
    assert DocumentVector.objects.get(document=second).collection_id == hidden.pk
    found = ids(similar_documents(user=other_user, document=private_twin, k=50))
    assert second.pk not in found and first.pk in found
    assert second.pk in ids(similar_documents(user=user, document=first, k=50))


def test_more_like_this_passage_stays_in_readable_other_documents(user, other_user, collection, halves, private_twin):
    first, second = halves["chess"]
    chunk = first.chunks.first()
    found = similar_passages(user=user, chunk=chunk, k=50)
    assert found and found[0].document_id == second.pk
    assert all(hit.document_id != first.pk for hit in found)
    assert private_twin.pk not in {hit.document_id for hit in found}


def test_more_like_this_passage_searches_collections_of_every_distance(user, collection, halves):
    first, _ = halves["database"]
    other = Collection.objects.create(name="Inner product", owner=user, distance="ip")
    twin = add_text_document(user, other, "database-twin", half("database", TOPICS["database"], 1) + " More.")
    assert list(ChunkVector.objects.filter(document=twin).values_list("distance", flat=True)) == ["ip"]
    found = similar_passages(user=user, chunk=first.chunks.first(), k=2)
    assert twin.pk in {hit.document_id for hit in found}
    # Document vectors are compared by cosine whatever the collection's distance (they are normalised).
    assert twin.pk in ids(similar_documents(user=user, document=first, k=2))
    Collection.objects.filter(pk=other.pk).update(distance="l2")
    assert twin.pk in ids(similar_documents(user=user, document=first, k=2))


# ---------------------------------------------------------------------------------------------------------
# Filters: in the same statement as the ranking, and still k results (iterative scans)


def test_a_collection_filter_still_returns_k_results(user, collection, halves, settings):
    settings.RETRIEVAL_MIN_SIMILARITY = -1.0  # the far documents are unrelated: no floor, to see the filter fill k
    first, _ = halves["glacier"]
    other = Collection.objects.create(name="Far away", owner=user)
    far = [
        add_text_document(user, other, f"far-{i}", f"Unrelated memo {i} about parking and lunch menus.")
        for i in range(3)
    ]
    found = similar_documents(user=user, document=first, k=3, filters=SimilarFilters(collection="Far away"))
    assert set(ids(found)) == {doc.pk for doc in far}
    by_id = similar_documents(user=user, document=first, k=3, filters=SimilarFilters(collection=str(other.pk)))
    assert ids(by_id) == ids(found)


def test_type_and_date_filters(user, collection, halves):
    first, second = halves["cycling"]
    markdown = services.document_create(
        owner=user,
        collection=collection,
        file=ContentFile(
            b"# Cycling\n\n" + half("cycling", TOPICS["cycling"], 1).encode() + b" Markdown.", name="ride.md"
        ),
        filename="ride.md",
        enqueue=False,
    )
    pipeline.document_ingest(document_id=markdown.pk)
    assert ids(similar_documents(user=user, document=first, k=5, filters=SimilarFilters(kind="markdown"))) == [
        markdown.pk
    ]
    old = timezone.now() - datetime.timedelta(days=30)
    Document.objects.filter(pk=second.pk).update(created_at=old)
    cutoff = (timezone.now() - datetime.timedelta(days=1)).date()
    assert ids(similar_documents(user=user, document=first, k=50, filters=SimilarFilters(created_before=cutoff))) == [
        second.pk
    ]
    assert second.pk not in ids(
        similar_documents(user=user, document=first, k=50, filters=SimilarFilters(created_after=cutoff))
    )


# ---------------------------------------------------------------------------------------------------------
# The API and the page


@pytest.fixture
def bearer(user):
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user=user)[1]}"}


def test_the_similar_documents_api(client, bearer, halves):
    first, second = halves["bakery"]
    response = client.get(f"/api/v1/documents/{first.pk}/similar?k=2", **bearer)
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 2
    assert results[0] == {
        "document_id": second.pk,
        "title": second.title,
        "collection": "Handbook",
        "score": pytest.approx(results[0]["score"]),
        "near_duplicate": False,
    }
    assert 0 < results[0]["score"] < 0.98
    assert client.get(f"/api/v1/documents/{first.pk}/similar?k=0", **bearer).status_code == 422
    assert client.get(f"/api/v1/documents/{first.pk}/similar?type=exe", **bearer).status_code == 422
    assert client.get(f"/api/v1/documents/{first.pk}/similar?collection=Handbook", **bearer).json()["results"]
    missing = client.get(f"/api/v1/documents/{first.pk}/similar?collection=Nowhere", **bearer)
    assert missing.status_code == 404 and "Nowhere" in missing.json()["detail"]


def test_the_similar_api_answers_404_for_a_document_or_chunk_the_caller_cannot_read(client, other_user, halves):
    first, _ = halves["bakery"]
    headers = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user=other_user)[1]}"}
    assert client.get(f"/api/v1/documents/{first.pk}/similar", **headers).status_code == 404
    assert client.get(f"/api/v1/chunks/{first.chunks.first().pk}/similar", **headers).status_code == 404


def test_the_more_like_this_api(client, bearer, halves):
    first, second = halves["sailing"]
    response = client.get(f"/api/v1/chunks/{first.chunks.first().pk}/similar?k=3", **bearer)
    assert response.status_code == 200
    results = response.json()["results"]
    assert results[0]["document_id"] == second.pk and results[0]["document_title"] == second.title
    assert set(results[0]) == {
        "chunk_id",
        "document_id",
        "document_title",
        "collection",
        "page",
        "heading",
        "text",
        "score",
    }


def test_the_document_page_lists_similar_documents_in_a_fixed_number_of_queries(client, user, collection, halves):
    client.force_login(user)
    first, second = halves["volcano"]
    url = reverse("documents:detail", args=[first.pk])
    with CaptureQueriesContext(connection) as few:
        page = client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Similar documents" in html and reverse("documents:detail", args=[second.pk]) in html
    add_text_document(user, collection, "volcano-copy", half("volcano", TOPICS["volcano"], 0) + " Again.")
    for i in range(4):
        add_text_document(
            user,
            Collection.objects.create(name=f"More {i}", owner=user),
            f"v{i}",
            half("volcano", TOPICS["volcano"], 1) + f" Copy {i}.",
        )
    with CaptureQueriesContext(connection) as many:
        page = client.get(url)
    assert "Near-duplicate" in page.content.decode()
    assert len(many) == len(few)


def test_a_narrow_filter_still_fills_the_list_through_the_hnsw_index(user, collection, halves, settings):
    """Past ef_search: 45 near documents, then 3 far old ones that a date filter keeps, found by the index scan."""
    settings.RETRIEVAL_MIN_SIMILARITY = -1.0  # the far ones are unrelated: no floor, to see the scan reach them
    first, _ = halves["chess"]
    for i in range(45):
        add_text_document(user, collection, f"chess-{i}", half("chess", TOPICS["chess"], i % 2) + f" Game {i}.")
    far = [
        add_text_document(user, collection, f"far-{i}", f"Memo {i} about parking and lunch menus.") for i in range(3)
    ]
    Document.objects.filter(pk__in=[d.pk for d in far]).update(created_at=timezone.now() - datetime.timedelta(days=30))
    cutoff = (timezone.now() - datetime.timedelta(days=1)).date()
    plans: list[str] = []

    def explained(execute, sql, params, many, context):
        if "nearest" in sql:
            execute("EXPLAIN " + sql, params, many, context)
            plans.extend(row[0] for row in context["cursor"].fetchall())
        return execute(sql, params, many, context)

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE documents_documentvector")
        # The HNSW index, as with many documents (on a few, an exact sort is cheaper).
        cursor.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off")
        with connection.execute_wrapper(explained):
            found = similar_documents(user=user, document=first, k=3, filters=SimilarFilters(created_before=cutoff))
    index = document_index_name(collection.active_space_id)
    assert any(index in line for line in plans), "\n".join(plans)
    assert set(ids(found)) == {doc.pk for doc in far}


@pytest.mark.django_db(transaction=True)
def test_the_migration_puts_each_document_vector_in_its_collections_space(user, collection):
    """Migration 0016: vectors of the active space's model are kept, the others are made again from the chunks."""
    from django.db.migrations.executor import MigrationExecutor

    kept, remade = (
        add_text_document(
            user, collection, name, "\n\n".join(f"Part {i}: {name} trains and hotels. " * 60 for i in range(3))
        )
        for name in ("kept", "remade")
    )
    space = collection.active_space
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    (before,) = executor.loader.graph.node_map[("documents", "0016_document_vectors_per_space")].parents
    executor.migrate([before])
    with connection.cursor() as cursor:
        cursor.execute("SELECT embedding_model, vector_dims(embedding) FROM documents_documentvector ORDER BY 1")
        assert cursor.fetchall() == [(space.model, space.dimensions)] * 2
        assert not document_index_exists(space)
        # As if made by another model than the collection's space's: made again from the chunk vectors.
        cursor.execute(
            "UPDATE documents_documentvector SET embedding_model = 'other' WHERE document_id = %s", [remade.pk]
        )
    MigrationExecutor(connection).migrate(latest)
    for document in (kept, remade):
        stored = DocumentVector.objects.get(document=document)
        mean = chunk_vectors(document).mean(axis=0)
        assert stored.space_id == space.pk
        assert np.allclose(np.asarray(stored.embedding), mean / np.linalg.norm(mean), atol=1e-5)
    assert document_index_exists(space)


# ---------------------------------------------------------------------------------------------------------
# Embedding spaces: only vectors of one space are compared; a switch rebuilds the document vectors


@pytest.fixture
def small_space():
    """A second embedding space (hashing, 64 dimensions), with its partition and cosine index."""
    space = EmbeddingSpace.objects.create(
        name="hashing-64", backend="hashing", model="hashing", dimensions=64, status="ready"
    )
    storage.create_partition(space)
    storage.create_index(space, "cosine")
    return space


def test_collections_on_another_space_are_never_compared(user, collection, halves, small_space):
    first, second = halves["chess"]
    elsewhere = Collection.objects.create(name="Small model", owner=user, active_space=small_space)
    twin = add_text_document(user, elsewhere, "chess-small", half("chess", TOPICS["chess"], 1))
    assert DocumentVector.objects.get(document=twin).space_id == small_space.pk
    assert len(chunk_vectors(twin)) and document_index_exists(small_space)
    assert twin.pk not in ids(similar_documents(user=user, document=first, k=50))
    assert ids(similar_documents(user=user, document=twin, k=50)) == []  # alone in its space
    passages = similar_passages(user=user, chunk=first.chunks.first(), k=50)
    assert passages and twin.pk not in {hit.document_id for hit in passages}
    assert similar_passages(user=user, chunk=twin.chunks.first(), k=50) == []


def test_a_switch_rebuilds_the_collections_document_vectors_from_the_new_space(user, collection, halves, small_space):
    """document_vectors_rebuild (the switch calls it): the mean of the new space's chunk vectors, its own index."""
    backend = backend_for(small_space)
    chunks = list(Chunk.objects.filter(collection=collection).order_by("pk"))
    vectors = backend.embed_documents([chunk.text for chunk in chunks])
    write_vectors(
        space=small_space,
        rows=(
            (c.pk, c.collection_id, c.document_id, collection.distance, v) for c, v in zip(chunks, vectors, strict=True)
        ),
    )
    Collection.objects.filter(pk=collection.pk).update(active_space=small_space, previous_space=collection.active_space)
    collection.refresh_from_db()
    with CaptureQueriesContext(connection) as statements:
        written = document_vectors_rebuild(collection=collection, space=small_space)
    assert written == 2 * len(TOPICS) and len(statements) <= 6  # set-based: not a statement per document
    first, second = halves["sailing"]
    stored = DocumentVector.objects.get(document=first)
    mean = chunk_vectors(first, small_space.pk).mean(axis=0)
    assert stored.space_id == small_space.pk and len(stored.embedding) == 64
    assert np.allclose(np.asarray(stored.embedding), mean / np.linalg.norm(mean), atol=1e-5)
    assert document_index_exists(small_space)
    assert ids(similar_documents(user=user, document=first, k=1)) == [second.pk]
    # Rolled back: the same function makes them again from the previous space.
    Collection.objects.filter(pk=collection.pk).update(active_space=collection.previous_space)
    collection.refresh_from_db()
    document_vectors_rebuild(collection=collection, space=collection.active_space)
    assert set(DocumentVector.objects.values_list("space_id", flat=True)) == {collection.active_space_id}
    assert ids(similar_documents(user=user, document=first, k=1)) == [second.pk]


def test_the_more_like_this_page(client, user, other_user, halves, private_twin):
    client.force_login(user)
    first, second = halves["chess"]
    chunk = first.chunks.first()
    detail = client.get(reverse("documents:detail", args=[first.pk])).content.decode()
    url = reverse("documents:chunk_similar", args=[chunk.pk])
    assert url in detail
    html = client.get(url).content.decode()
    target = second.chunks.first()
    assert f"{reverse('documents:detail', args=[second.pk])}?chunk={target.pk}" in html
    assert private_twin.title not in html and f"/documents/{first.pk}/?chunk=" in html  # only the way back
    client.force_login(other_user)
    assert client.get(url).status_code == 404


def test_unrelated_documents_and_passages_are_not_listed_as_similar(client, user, collection, halves, settings):
    floor = settings.RETRIEVAL_MIN_SIMILARITY
    first, second = halves["chess"]
    memo = add_text_document(user, collection, "parking", "Memo about parking spaces and the lunch menu on Fridays.")
    found = similar_documents(user=user, document=first, k=50)
    assert found and all(hit.score > floor for hit in found) and memo.pk not in ids(found)
    assert second.pk in ids(found)
    passages = similar_passages(user=user, chunk=first.chunks.first(), k=50)
    assert passages and all(hit.score > floor for hit in passages) and memo.pk not in {p.document_id for p in passages}
    assert similar_documents(user=user, document=memo, k=50) == []
    assert similar_passages(user=user, chunk=memo.chunks.get(), k=50) == []

    client.force_login(user)
    page = client.get(reverse("documents:detail", args=[memo.pk])).content.decode()
    assert "Similar documents" in page and "No similar documents." in page
    more = client.get(reverse("documents:chunk_similar", args=[memo.chunks.get().pk])).content.decode()
    assert "No passage of another document you can read is like this one." in more
    listed = client.get(reverse("documents:detail", args=[first.pk])).content.decode()
    assert f"similarity {found[0].score:.2f}" in listed and "No similar documents." not in listed
    assert f"similarity {passages[0].score:.2f}" in client.get(
        reverse("documents:chunk_similar", args=[first.chunks.first().pk])
    ).content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_first_documents_of_a_new_space_stored_at_once_both_get_their_vector(user, monkeypatch):
    """Two stores that both find the space without a document index: one makes it, the other waits and uses it
    (making it after writing their rows, each would wait for the other's rows: a deadlock)."""
    import threading

    from django.db import connections, transaction

    from documents import similar

    space = EmbeddingSpace.objects.create(name="hashing-64", backend="hashing", model="hashing", dimensions=64)
    storage.create_partition(space)
    documents = []
    for name in ("left", "right"):
        collection = Collection.objects.create(name=name, owner=user, active_space=space)
        documents.append(
            Document.objects.create(owner=user, collection=collection, title=name, sha256=name * 8, status="ready")
        )
    both_looked = threading.Barrier(2, timeout=30)
    make_index = similar.create_document_index

    def after_both_looked(space):
        both_looked.wait()  # each found no index before either made it
        make_index(space)

    monkeypatch.setattr(similar, "create_document_index", after_both_looked)
    errors: list[BaseException] = []

    def store(document: Document) -> None:
        try:
            with transaction.atomic():
                document_vector_write(
                    document_id=document.pk,
                    collection_id=document.collection_id,
                    vectors=np.random.default_rng(document.pk).random((3, 64), dtype=np.float32),
                )
        except BaseException as error:  # noqa: BLE001  (reported below, in the test's thread)
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=store, args=(document,)) for document in documents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert DocumentVector.objects.filter(space=space).count() == 2 and document_index_exists(space)
