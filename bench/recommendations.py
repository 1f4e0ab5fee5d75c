"""Recommendations: do a reader's recommendations come from the topic they read? Interest vector against popularity.

N SciFact abstracts (title and the first 48 words) are embedded with the local all-MiniLM-L6-v2 int8 model and
grouped into C topics by spherical k-means on those vectors. They are stored as ready documents of one shared
collection, each with its vector (``DocumentVector``, as the store writes it). U simulated readers each pick a
topic and open H of its documents (popular ones more often: Zipf weights within the topic), through
``interest_record`` as the document page does. Then, for every reader, precision@10: the share of the ten
recommended documents that belong to the reader's topic, for

- **interest** — the product's ``recommendations_for`` (the time-decayed interest vector);
- **popularity** — the product's cold start for that reader (what the most readers opened lately, unseen ones);
- **chance** — the share of the reader's topic among all documents.

A drift row: readers whose history is H documents of one topic opened 30 days ago and 2 of another opened
today — the share of recommendations from the new topic (time decay at work) — and the speed of
``recommendations_for``.

    .venv/bin/python bench/recommendations.py            # N=1000, C=20, U=200; recorded in bench/BENCHMARKS.md
    .venv/bin/python bench/recommendations.py --quick    # N=50, C=4, U=12; a smoke run, not recorded
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import _common
import _data
import numpy as np

K = 10
WORDS = 48


def abstracts(count: int) -> list[str]:
    texts = []
    for line in _common.require_shared("data/scifact/corpus.jsonl").open():
        record = json.loads(line)
        words = record["text"].split()[:WORDS]  # the opening of the abstract: embedding all of it is slow on 2 cores
        texts.append(f"{record['title']}. {' '.join(words)}".strip())
        if len(texts) == count:
            break
    return texts


def kmeans(vectors: np.ndarray, clusters: int, *, iterations: int = 25, seed: int = 0) -> np.ndarray:
    """Spherical k-means (cosine) of L2-normalised rows: each row's cluster."""
    rng = np.random.default_rng(seed)
    centres = vectors[rng.choice(len(vectors), clusters, replace=False)]
    for _ in range(iterations):
        labels = np.argmax(vectors @ centres.T, axis=1)
        for c in range(clusters):
            members = vectors[labels == c]
            if len(members):
                centres[c] = members.mean(axis=0)
        centres = _data.normalise(centres)
    return np.argmax(vectors @ centres.T, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=50, C=4, U=12; not recorded")
    parser.add_argument("--n", type=int, default=1000, help="abstracts")
    parser.add_argument("--topics", type=int, default=20)
    parser.add_argument("--readers", type=int, default=200)
    parser.add_argument("--history", type=int, default=5, help="documents each reader opens")
    args = parser.parse_args()
    if args.quick:
        args.n, args.topics, args.readers = 50, 4, 12

    _common.setup_django("ragbench_recommendations", EMBEDDING_BACKEND="local", LOG_LEVEL="WARNING")
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from documents.db import vector_cursor
    from documents.models import Collection, Document, DocumentVector, Interest
    from documents.recommend import _cold_start, interest_record, recommendations_for
    from documents.spaces.document_index import create_document_index

    texts = abstracts(args.n)
    vectors = _data.embed_cached("scifact-abstracts", texts)
    topic = kmeans(vectors, args.topics)
    sizes = np.bincount(topic, minlength=args.topics)

    users = get_user_model().objects
    owner, _ = users.get_or_create(username="recbench-owner")
    Interest.objects.all().delete()
    Collection.objects.filter(owner=owner).delete()
    collection = Collection.objects.create(owner=owner, name="scifact abstracts")
    made = Document.objects.bulk_create(
        Document(
            owner=owner,
            collection=collection,
            title=text[:80],
            sha256=f"{i:064x}",
            status=Document.Status.READY,
            chunk_count=1,
        )
        for i, text in enumerate(texts)
    )
    space = collection.active_space  # the configured model's, which embedded the abstracts
    assert space is not None
    DocumentVector.objects.bulk_create(
        (
            DocumentVector(document=d, collection=collection, space=space, embedding=v)
            for d, v in zip(made, vectors, strict=True)
        ),
        batch_size=2000,
    )
    create_document_index(space)
    pks = np.array([d.pk for d in made])
    topic_of = dict(zip(pks.tolist(), topic.tolist(), strict=True))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE documents_documentvector; ANALYZE documents_document")

    rng = np.random.default_rng(0)

    def reader(name: str) -> Any:
        user, _ = users.get_or_create(username=name)
        collection.members.add(user)
        return user

    def opened(chosen: int, count: int) -> list[int]:
        members = pks[topic == chosen]
        weights = 1 / np.arange(1, len(members) + 1)  # Zipf: the topic's first documents are its popular ones
        picked = rng.choice(len(members), min(count, len(members)), replace=False, p=weights / weights.sum())
        return members[picked].tolist()

    readers = []
    for r in range(args.readers):
        chosen = r % args.topics
        user = reader(f"recbench-reader-{r}")
        interest_record(user=user, document_ids=opened(chosen, args.history), kind=Interest.Kind.OPENED)
        readers.append((user, chosen))

    def precision(found: list[int], chosen: int) -> float:
        return sum(topic_of[pk] == chosen for pk in found) / K

    rows: dict[str, list[float]] = {"interest": [], "popularity": [], "chance": []}
    seconds = []
    for user, chosen in readers:
        started = time.perf_counter()
        found = recommendations_for(user=user, k=K)
        seconds.append(time.perf_counter() - started)
        assert all(hit.reason == "interest" for hit in found), "a reader with a history got a cold-start pick"
        rows["interest"].append(precision([hit.document_id for hit in found], chosen))
        seen = list(Interest.objects.filter(user=user).values_list("document_id", flat=True))
        with vector_cursor() as cursor:
            popular = _cold_start(cursor, user.pk, K, exclude=seen)
        rows["popularity"].append(precision([hit.document_id for hit in popular], chosen))
        rows["chance"].append(sizes[chosen] / len(pks))

    # Drift: H documents of one topic a month ago, 2 of another today: where do recommendations come from?
    drift_new, drift_old = [], []
    month_ago = timezone.now() - timedelta(days=30)
    for r in range(min(args.readers, 2 * args.topics)):
        old, new = r % args.topics, (r + 1) % args.topics
        user = reader(f"recbench-drift-{r}")
        interest_record(user=user, document_ids=opened(old, args.history), kind=Interest.Kind.OPENED)
        Interest.objects.filter(user=user).update(created_at=month_ago)
        interest_record(user=user, document_ids=opened(new, 2), kind=Interest.Kind.OPENED)
        drifted = [hit.document_id for hit in recommendations_for(user=user, k=K)]
        drift_new.append(precision(drifted, new))
        drift_old.append(precision(drifted, old))

    table = [["recommended (k=10)", "precision@10 (reader's topic)", "readers"]]
    for name, values in rows.items():
        table.append([name, f"{np.mean(values):.1%}", str(len(values))])
    table.append(
        [
            "drift: 2 new-topic opens today after 5 old-topic ones 30 days ago",
            f"new topic {np.mean(drift_new):.1%}, old topic {np.mean(drift_old):.1%}",
            str(len(drift_new)),
        ]
    )
    p50, p95, _ = _data.percentiles(seconds)
    table.append(["recommendations_for() speed", f"p50 {p50:.2f} ms, p95 {p95:.2f} ms", str(len(seconds))])
    _common.report(
        args.quick,
        "Recommendations: from the reader's topic? (bench/recommendations.py)",
        f"N={len(pks):,} SciFact abstracts (title + first {WORDS} words), local all-MiniLM-L6-v2 int8, "
        "one shared collection; "
        f"C={args.topics} topics by spherical k-means on the vectors (sizes {sizes.min()}–{sizes.max()}); "
        f"U={len(readers)} readers, each opened H={args.history} documents of one topic (Zipf-weighted within it).",
        table,
        "Popularity is the product's cold start for that reader (most readers lately, then newest), i.e. what a "
        "reader without vectors in their history would get (it can score below chance: the most-opened documents "
        "are other topics' heads and this reader's own topic's heads are already opened, never recommended again).",
    )


if __name__ == "__main__":
    main()
