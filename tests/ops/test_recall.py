"""The sampled recall of the HNSW indexes: stored chunk vectors as queries, the index's top 10 against the exact top
10, per embedding space and distance."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings

from documents.models import ChunkVector, Collection, EmbeddingSpace
from documents.search import tuning
from documents.spaces import storage
from ops import dbhealth, recall
from ops.models import RecallSample
from tests.conftest import wait_until_the_worker_is_idle
from tests.documents_factory import add_text_document

pytestmark = pytest.mark.django_db

WORDS = "tea coffee river mountain violin engine garden winter harbour lantern copper meadow".split()


def fill(user, name: str, distance: str, count: int = 12, space: EmbeddingSpace | None = None) -> Collection:
    collection = Collection.objects.create(name=name, owner=user, distance=distance, active_space=space)
    for i in range(count):
        add_text_document(user, collection, f"{name}-{i}", f"A note on {WORDS[i % len(WORDS)]} number {i}.")
    return collection


def test_each_distance_with_chunks_gets_a_sample_and_a_small_exact_index_scores_1(user):
    fill(user, "cosine-notes", "cosine")
    fill(user, "l2-notes", "l2")
    samples = recall.sample_recall(queries=5)
    assert sorted(sample.distance for sample in samples) == ["cosine", "l2"]  # no inner-product chunks
    assert {sample.space_id for sample in samples} == {Collection.objects.get(name="l2-notes").active_space_id}
    for sample in samples:
        assert (sample.queries, sample.k, sample.ef_search) == (5, 10, tuning.search_ef(10))  # what searches use
        # ef_search (100) above the rows (12): the graph search visits every vector, so it is exact.
        assert sample.mean == sample.p10 == sample.minimum == 1.0
    assert RecallSample.objects.count() == 2


def test_each_embedding_space_is_measured_on_its_own_partition_and_index(user):
    small = EmbeddingSpace.objects.create(name="hashing-64", backend="hashing", model="hashing", dimensions=64)
    storage.create_partition(small)
    storage.create_index(small, "cosine")
    fill(user, "notes", "cosine")
    fill(user, "small-notes", "cosine", space=small)
    samples = recall.sample_recall(queries=5)
    default = Collection.objects.get(name="notes").active_space
    assert [(sample.space, sample.distance) for sample in samples] == sorted(
        [(default, "cosine"), (small, "cosine")], key=lambda pair: pair[0].pk
    )
    assert all(sample.mean == 1.0 for sample in samples)
    assert [sample.index for sample in RecallSample.objects.latest_by_distance()] == [
        f"{sample.space.name} cosine" for sample in samples
    ]


def test_the_measure_is_the_index_a_starved_search_scores_low_and_alerts(user, settings, admin_client):
    fill(user, "notes", "cosine")
    assert ChunkVector.objects.filter(distance="cosine").count() >= 10
    settings.HNSW_EF_SEARCH = 1  # the index returns one candidate per query: at most 1 of the exact 10
    (sample,) = recall.sample_recall(queries=4)
    assert sample.ef_search == 1 and 0 <= sample.minimum <= sample.p10 <= sample.mean <= 0.1
    report = dbhealth.report()
    assert report.status == dbhealth.ALERT and float(report.summary()["recall"]) <= 0.1
    page = admin_client.get("/admin/db-health/").content.decode()
    assert f"Recall of the {sample.space.name} cosine HNSW index is {sample.mean:.3f}, below 0.90." in page


def test_percentile_is_nearest_rank():
    values = [1.0, 0.2, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.1, 1.0]
    assert recall.percentile(values, 0.1) == 0.2
    assert recall.percentile([0.7], 0.1) == 0.7


def test_beat_runs_the_sample_nightly():
    entry = django_settings.CELERY_BEAT_SCHEDULE["sample-hnsw-recall"]
    assert entry["task"] == "ops.tasks.sample_recall"
    assert entry["schedule"].hour == {django_settings.RECALL_SAMPLE_HOUR}


@pytest.mark.django_db(transaction=True)
def test_the_worker_runs_the_task(celery_worker, celery_app, user):
    fill(user, "notes", "l2", count=3)
    celery_app.send_task("ops.tasks.sample_recall")
    wait_until_the_worker_is_idle(celery_app)  # no result backend: the row is the result
    (sample,) = RecallSample.objects.all()
    assert sample.distance == "l2" and sample.queries == 3 and sample.mean == 1.0
    assert sample.space_id == Collection.objects.get().active_space_id


def test_the_history_is_read_only_in_the_admin(admin_client):
    RecallSample.objects.create(distance="l2", queries=5, k=10, ef_search=100, mean=0.96, p10=0.9, minimum=0.8)
    listing = admin_client.get("/admin/ops/recallsample/")
    assert listing.status_code == 200 and "0.96" in listing.content.decode()
    assert admin_client.get("/admin/ops/recallsample/add/").status_code == 403
