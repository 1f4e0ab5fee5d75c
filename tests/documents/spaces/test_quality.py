"""documents.spaces.quality: the evaluation before a switch (labelled or not, HNSW recall) and the drift."""

from __future__ import annotations

import pytest
from django.db import connection

from chat.models import Citation, Conversation, Message
from documents.models import Collection, Document, SpaceMigration
from documents.spaces import quality
from tests.documents.spaces.migrating import add_documents, fill, migrating, space

pytestmark = pytest.mark.django_db

KEYS = {
    "overlap_at_10",
    "recall_at_10",
    "ndcg_at_10_active",
    "ndcg_at_10_target",
    "recall_at_100_active",
    "recall_at_100_target",
    "hnsw_recall_mean",
    "hnsw_recall_p10",
    "hnsw_recall_min",
    "queries",
    "labelled",
    "coverage",
    "evaluated_at",
}


@pytest.fixture
def documents(user, collection):
    return add_documents(user, collection)


def test_a_good_target_finds_the_synthetic_queries_source_chunks_and_is_stored(collection, documents):
    migration = migrating(collection, space("hashing-256", 256))
    result = quality.evaluate(collection=collection, sample=20)
    assert KEYS <= set(result)
    assert result["labelled"] is False and result["ndcg_at_10_target"] is None
    assert result["synthetic_queries"] == 20 and result["queries"] == 20
    assert result["coverage"] == 1.0
    # A sentence's first twelve words hash to much of the sentence's own features: found in both spaces.
    assert result["recall_at_10"] >= 0.9 and result["recall_at_10_active"] >= 0.9
    assert result["overlap_at_10"] > 0.5
    assert 0.9 <= result["hnsw_recall_min"] <= result["hnsw_recall_p10"] <= result["hnsw_recall_mean"] <= 1.0
    migration.refresh_from_db()
    assert migration.evaluation == result
    # A new model (other dimensions): its drift is the evaluation's overlap and recall.
    assert migration.drift["kind"] == "new_model"
    assert migration.drift["overlap_at_10"] == result["overlap_at_10"]
    assert migration.drift["ndcg_at_10_change"] is None


def test_a_target_of_noise_loses_the_source_chunks(collection, documents):
    migrating(collection, space("hashing-256", 256), noise=True)
    result = quality.evaluate(collection=collection, sample=20)
    # Noise finds a chunk in its top 10 of 30 by chance, 1 time in 3: 0.7 is 3.5 standard deviations above.
    assert result["recall_at_10"] < 0.7 < result["recall_at_10_active"]
    assert result["overlap_at_10"] < 0.6


def test_labelled_queries_give_ndcg_and_recall_per_space(collection, documents):
    for number, document in enumerate(documents):
        Document.objects.filter(pk=document.pk).update(external_id=f"d{number}")
    # Each query: the first words of its document's second sentence.
    queries = {f"q{n}": " ".join(d.chunks.first().text.split(". ")[1].split()[:10]) for n, d in enumerate(documents)}
    qrels = {f"q{n}": {f"d{n}"} for n in range(len(documents))}
    qrels["unjudged-elsewhere"] = {"d0"}
    migrating(collection, space("noise-256", 256), noise=True)
    result = quality.evaluate(collection=collection, queries=queries, qrels=qrels, sample=5)
    assert result["labelled"] is True and result["labelled_queries"] == len(documents)
    assert result["ndcg_at_10_active"] >= 0.9 and result["recall_at_100_active"] == 1.0
    assert result["ndcg_at_10_target"] < 0.5
    assert result["recall_at_100_target"] == 1.0  # 30 documents: every one is within 100
    drift = SpaceMigration.objects.get().drift
    assert drift["ndcg_at_10_change"] == round(result["ndcg_at_10_target"] - result["ndcg_at_10_active"], 4)


def test_a_same_model_re_embed_measures_cosine_per_chunk(collection, documents):
    same = space("hashing-384-again", 384, model="hashing-384")
    migration = migrating(collection, same)
    quality.evaluate(collection=collection, sample=10)
    migration.refresh_from_db()
    drift = migration.drift
    assert drift["kind"] == "same_model" and drift["chunks"] == len(documents)
    assert drift["cosine_p1"] == drift["cosine_p50"] == drift["cosine_min"] == 1.0  # the same vectors


def test_a_same_model_with_changed_vectors_drifts(collection, documents):
    migration = migrating(collection, space("hashing-384-noise", 384, model="hashing-384"), noise=True)
    drift = quality.drift(migration=migration)
    assert drift["kind"] == "same_model" and drift["cosine_p50"] < 0.5
    migration.refresh_from_db()
    assert migration.drift == drift


def test_hnsw_recall_is_unknown_before_the_index_is_built(collection, documents):
    migrating(collection, space("hashing-128", 128, index=False))
    result = quality.evaluate(collection=collection, sample=5)
    assert result["hnsw_recall_mean"] is result["hnsw_recall_min"] is None
    assert result["recall_at_10"] is not None


def test_coverage_counts_the_target_vectors(collection, documents):
    target = space("hashing-64", 64)
    migrating(collection, target)
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM documents_chunkvector WHERE space_id = %s AND chunk_id IN "
            "(SELECT chunk_id FROM documents_chunkvector WHERE space_id = %s LIMIT 3)",
            [target.pk, target.pk],
        )
    assert quality.coverage(collection=collection, space=target) == round(27 / 30, 4)
    assert quality.evaluate(collection=collection, sample=5)["coverage"] == round(27 / 30, 4)
    fill(collection, target)
    assert quality.coverage(collection=collection, space=target) == 1.0


def test_recent_questions_are_those_asked_of_the_collection(user, collection, documents):
    other = Collection.objects.create(owner=user, name="Other")
    scoped = Conversation.objects.create(owner=user, collection=collection)
    Message.objects.create(conversation=scoped, role="user", content="What is   the dough?")
    Message.objects.create(conversation=scoped, role="assistant", content="An answer.")
    citing = Conversation.objects.create(owner=user)
    Message.objects.create(conversation=citing, role="user", content="Where is the crater?")
    answer = Message.objects.create(conversation=citing, role="assistant", content="There [1].")
    chunk = documents[0].chunks.first()
    Citation.objects.create(message=answer, chunk=chunk, index=1, document_id=chunk.document_id, title="d")
    elsewhere = Conversation.objects.create(owner=user, collection=other)
    Message.objects.create(conversation=elsewhere, role="user", content="Not about this one")
    assert quality.recent_questions(collection=collection, limit=10) == ["Where is the crater?", "What is the dough?"]
    migrating(collection, space("hashing-256", 256))
    result = quality.evaluate(collection=collection, sample=4)
    assert result["recent_questions"] == 2 and result["queries"] == 6


def test_nothing_to_evaluate_is_a_clear_error(collection, documents):
    with pytest.raises(quality.EvaluationError, match="no migration in progress"):
        quality.evaluate(collection=collection)
    migrating(collection, space("hashing-256", 256))
    with pytest.raises(quality.EvaluationError, match="both the queries"):
        quality.evaluate(collection=collection, queries={"q": "x"})
    with pytest.raises(quality.EvaluationError, match="No query has relevance judgments"):
        quality.evaluate(collection=collection, queries={"q": "x"}, qrels={"other": {"d"}})
