"""Similar documents at scale: speed with an access filter to a 1% collection and without, against the bare SQL.

N synthetic document vectors (384 dimensions, about 100 documents per topic, L2-normalised, as every
backend's are) in two collections of one owner: 99% in one, 1% in the other. A second user is a member of
the small collection only. Four ways, interleaved on the same source documents (drawn from the 1% collection):

- **similar_documents(), everything readable** — the owner: access subquery, iterative HNSW scan;
- **bare, everything** — pgvector's own query on the same rows, with the predicate and expression of the space's
  index: ``WHERE space_id = S ORDER BY (embedding::vector(384)) <=> (SELECT …) LIMIT k``;
- **similar_documents(), 1% readable** — the member: the same call, the access filter keeps 1% of the rows;
- **bare, 1% (``WHERE collection_id = …``)** — the plain filtered query (HNSW post-filter without iterative
  scan: it may return fewer than k rows).

Each row reports p50/p95 and recall@k against the exact answer (numpy) for what that reader may read.
The space's HNSW index of document vectors is dropped for the load and rebuilt after (timed), as a bulk load
should be.

    .venv/bin/python bench/similar_scale.py             # N=20,000; recorded in bench/BENCHMARKS.md
    .venv/bin/python bench/similar_scale.py --n 100000  # the issue's size (a longer build)
    .venv/bin/python bench/similar_scale.py --quick     # N=2,000; a smoke run, not recorded
"""

from __future__ import annotations

import argparse
import time

import _common
import _data
import numpy as np

K = 10
DIM = 384
LOOKUPS = 200


def vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    """Documents around n/100 topic centres, spread in a shared 64-dimensional subspace plus a little noise."""
    rng = np.random.default_rng(seed)
    topics = max(1, n // 100)
    centres = _data.normalise(rng.standard_normal((topics, dim)))
    basis = np.linalg.qr(rng.standard_normal((dim, 64)))[0].T
    spread = rng.standard_normal((n, 64)) @ basis * 0.08 + rng.standard_normal((n, dim)) * 0.01
    return _data.normalise(centres[rng.integers(0, topics, n)] + spread)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=2,000; not recorded")
    parser.add_argument("--n", type=int, default=20_000, help="documents")
    args = parser.parse_args()
    n = 2_000 if args.quick else args.n

    _common.setup_django(f"ragbench_similar_scale_{n}", LOG_LEVEL="WARNING")
    from django.contrib.auth import get_user_model
    from django.db import connection

    from documents.models import Collection, Document, DocumentVector
    from documents.similar import similar_documents
    from documents.spaces.document_index import create_document_index, document_expression, document_index_name

    users = get_user_model().objects
    owner, _ = users.get_or_create(username="scale-owner")
    member, _ = users.get_or_create(username="scale-member")
    DocumentVector.objects.filter(collection__owner=owner).delete()
    Document.objects.filter(owner=owner).delete()
    Collection.objects.filter(owner=owner).delete()
    big = Collection.objects.create(owner=owner, name="the 99%")
    small = Collection.objects.create(owner=owner, name="the 1%")
    small.members.add(member)

    space = big.active_space  # the configured model's (documents.spaces.default_space)
    assert space is not None
    matrix = vectors(n, dim=space.dimensions)
    in_small = np.zeros(n, dtype=bool)
    in_small[np.random.default_rng(1).choice(n, max(K + 1, n // 100), replace=False)] = True
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {document_index_name(space)}")
    made = Document.objects.bulk_create(
        (
            Document(
                owner=owner,
                collection=small if in_small[i] else big,
                title=f"document {i}",
                sha256=f"{i:064x}",
                status=Document.Status.READY,
                chunk_count=1,
            )
            for i in range(n)
        ),
        batch_size=5000,
    )
    DocumentVector.objects.bulk_create(
        (
            DocumentVector(document=d, collection=small if in_small[i] else big, space=space, embedding=v)
            for i, (d, v) in enumerate(zip(made, matrix, strict=True))
        ),
        batch_size=2000,
    )
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    create_document_index(space)
    built = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE documents_documentvector; ANALYZE documents_document")

    pks = np.array([d.pk for d in made])
    sources = np.flatnonzero(in_small)
    sources = sources[np.random.default_rng(2).permutation(len(sources))][: min(LOOKUPS, len(sources))]
    documents = [made[i] for i in sources]
    # Every other collection (of other bench runs) in this database is neither owner's: nothing else is readable.

    def exact(i: int, mask: np.ndarray) -> set[int]:
        scores = matrix @ matrix[sources[i]]
        scores[~mask] = -np.inf
        scores[sources[i]] = -np.inf
        return set(pks[np.argsort(-scores)[:K]].tolist())

    everything = np.ones(n, dtype=bool)
    truth = {
        "all": [exact(i, everything) for i in range(len(sources))],
        "1%": [exact(i, in_small) for i in range(len(sources))],
    }

    expression = document_expression(space.dimensions)

    def bare(i: int, where: str = "", params: tuple = ()) -> list[int]:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT document_id FROM documents_documentvector WHERE space_id = {int(space.pk)} "
                f"AND document_id <> %s {where} ORDER BY {expression} <=> "
                f"(SELECT {expression} FROM documents_documentvector WHERE document_id = %s) LIMIT %s",
                [documents[i].pk, *params, documents[i].pk, K],
            )
            return [row[0] for row in cursor.fetchall()]

    ways = {
        "similar_documents(), everything readable": (
            lambda i: [h.document_id for h in similar_documents(user=owner, document=documents[i], k=K)],
            "all",
        ),
        "bare pgvector query, everything": (lambda i: bare(i), "all"),
        "similar_documents(), 1% readable (access filter)": (
            lambda i: [h.document_id for h in similar_documents(user=member, document=documents[i], k=K)],
            "1%",
        ),
        "bare pgvector query, WHERE collection_id = the 1%": (
            lambda i: bare(i, "AND collection_id = %s", (small.pk,)),
            "1%",
        ),
    }
    timings = _data.interleaved({name: way for name, (way, _) in ways.items()}, len(documents))
    table = [["way (k=10)", "p50 ms", "p95 ms", "recall@10", "lists with 10 rows"]]
    for name, (seconds, found) in timings.items():
        p50, p95, _ = _data.percentiles(seconds)
        expected = truth[ways[name][1]]
        recall = np.mean([len(set(f) & t) / K for f, t in zip(found, expected, strict=True)])
        full = np.mean([len(f) == K for f in found])
        table.append([name, f"{p50:.2f}", f"{p95:.2f}", f"{recall:.3f}", f"{full:.0%}"])
    _common.report(
        args.quick,
        "Similar documents at scale, with and without an access filter (bench/similar_scale.py)",
        f"N={n:,} synthetic {space.dimensions}-d document vectors (about 100 per topic), {in_small.sum():,} of them "
        f"(1%) in the collection the member may read; {len(documents)} source documents from it, interleaved, one "
        f"connection; load {loaded:.1f} s, HNSW build (m=16, ef_construction=64) {built:.1f} s.",
        table,
        "similar_documents() puts the readable collections' ids in a transaction-local setting the ranking filters "
        "on (documents/similar.py, as search() does): the planner sees them, so the 1% reader gets the collection "
        "index and an exact sort, as the bare query with the collection written out does.",
    )


if __name__ == "__main__":
    main()
