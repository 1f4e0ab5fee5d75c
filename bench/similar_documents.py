"""Similar documents: does the other half of an abstract come first? Mean vector against max-sim re-score; speed.

Each of N SciFact abstracts is split into two halves (by sentences, no title), stored as two documents through
the normal pipeline with the local all-MiniLM-L6-v2 int8 model. For every half, "similar documents" should
rank the other half first. Two rankings of the same candidates:

- **mean**: the product's ranking, the cosine of the documents' vectors (the normalised mean of their chunks');
- **max-sim**: the top ``RESCORE`` documents by mean, re-scored by the best cosine between any chunk of the
  half and any chunk of the candidate (read from the chunk vectors of the collection's space, scored here);
- **chamfer**: the same candidates re-scored by the mean over the half's chunks of their best cosine.

Chunks are cut at ``--chunk-tokens`` (64 by default: at the app's 254 a half is one chunk and the three
rankings are the same). Speed: similar_documents() (access control, filters' SQL, iterative scan, two
statements in a transaction) against pgvector's bare query on the same rows
(``WHERE space_id = S ORDER BY (embedding::vector(N)) <=> (SELECT …) LIMIT k``: the space's partial
expression index), interleaved.

    .venv/bin/python bench/similar_documents.py            # N=300, recorded in bench/BENCHMARKS.md
    .venv/bin/python bench/similar_documents.py --quick    # N=20, a smoke run, not recorded
"""

from __future__ import annotations

import argparse
import json
import re

import _common
import _data
import numpy as np

SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")
RESCORE = 20
K = 5


def halves(count: int) -> list[tuple[str, str, str]]:
    """(abstract id, first half, second half) of the first ``count`` abstracts of at least four sentences."""
    found = []
    for line in _common.require_shared("data/scifact/corpus.jsonl").open():
        record = json.loads(line)
        sentences = SENTENCE.split(record["text"].strip())
        if len(sentences) < 4:
            continue
        middle = len(sentences) // 2
        found.append((record["_id"], " ".join(sentences[:middle]), " ".join(sentences[middle:])))
        if len(found) == count:
            break
    return found


PADDING = "similar-bench padding"


def pad(user, documents, count: int) -> None:
    """``count`` ready documents with vectors near the halves' (a half's plus noise), for the speed rows only."""
    from django.db import connection

    from documents.models import Collection, Document, DocumentVector

    unpad(user)
    collection = Collection.objects.create(owner=user, name=PADDING)
    vectors = np.array([np.asarray(v.embedding) for v in DocumentVector.objects.filter(document__in=documents)])
    space = collection.active_space  # the same as the halves' (the configured model's)
    rng = np.random.default_rng(0)
    noisy = vectors[rng.integers(0, len(vectors), count)] + rng.normal(0, 0.04, (count, vectors.shape[1]))
    noisy = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
    made = Document.objects.bulk_create(
        Document(
            owner=user,
            collection=collection,
            title=f"padding {i}",
            sha256=f"{i:064x}",
            status=Document.Status.READY,
            chunk_count=1,
        )
        for i in range(count)
    )
    DocumentVector.objects.bulk_create(
        (
            DocumentVector(document=d, collection=collection, space=space, embedding=v)
            for d, v in zip(made, noisy, strict=True)
        ),
        batch_size=2000,
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE documents_documentvector; ANALYZE documents_document")


def unpad(user) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM documents_documentvector WHERE collection_id IN "
            "(SELECT id FROM documents_collection WHERE owner_id = %s AND name = %s)",
            [user.pk, PADDING],
        )
        cursor.execute(
            "DELETE FROM documents_document WHERE collection_id IN "
            "(SELECT id FROM documents_collection WHERE owner_id = %s AND name = %s)",
            [user.pk, PADDING],
        )
        cursor.execute("DELETE FROM documents_collection WHERE owner_id = %s AND name = %s", [user.pk, PADDING])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=20, not recorded")
    parser.add_argument("--n", type=int, default=300, help="abstracts (each stored as two documents)")
    parser.add_argument("--chunk-tokens", type=int, default=64)
    parser.add_argument("--pad", type=int, default=20_000, help="padding documents for the speed rows (0: none)")
    args = parser.parse_args()
    n = 20 if args.quick else args.n
    args.pad = 0 if args.quick else args.pad

    _common.setup_django(
        f"ragbench_similar_{args.chunk_tokens}",
        EMBEDDING_BACKEND="local",
        LOG_LEVEL="WARNING",
        CHUNK_SIZE_TOKENS=str(args.chunk_tokens),
        CHUNK_OVERLAP_TOKENS=str(args.chunk_tokens // 8),
    )
    from django.contrib.auth import get_user_model
    from django.core.files.base import ContentFile
    from django.db import connection

    from documents import pipeline, services
    from documents.models import ChunkVector, Document
    from documents.similar import similar_documents
    from documents.spaces.document_index import document_expression

    user, _ = get_user_model().objects.get_or_create(username="bench")
    collection = services.collection_for_upload(user=user, name="scifact halves")
    pairs = halves(n)
    stored = {d.title: d for d in Document.objects.filter(collection=collection, status=Document.Status.READY)}
    for abstract, *texts in pairs:
        for side, text in zip("AB", texts, strict=True):
            title = f"{abstract} {side}"
            if title in stored:
                continue
            document = services.document_create(
                owner=user,
                collection=collection,
                title=title,
                enqueue=False,
                file=ContentFile(text.encode(), name=f"{abstract}-{side}.txt"),
            )
            ingested = pipeline.document_ingest(document_id=document.pk)
            assert ingested is not None and ingested.status == Document.Status.READY, title
            stored[title] = ingested
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE documents_documentvector; ANALYZE documents_chunkvector")
    documents = [stored[f"{abstract} {side}"] for abstract, *_ in pairs for side in "AB"]
    other = {d.pk: documents[i ^ 1].pk for i, d in enumerate(documents)}
    rows_of: dict[int, list[np.ndarray]] = {}
    space = collection.active_space
    assert space is not None
    vectors = ChunkVector.objects.filter(space=space, collection=collection).values_list("document_id", "embedding")
    for document_id, embedding in vectors:
        rows_of.setdefault(document_id, []).append(np.asarray(embedding, dtype=np.float32))
    chunks = {pk: np.array(rows) for pk, rows in rows_of.items()}
    per_document = np.mean([len(rows) for rows in chunks.values()])

    def rescored(document_id: int, candidates: list[int], how: str) -> list[int]:
        mine = chunks[document_id]
        scores = []
        for candidate in candidates:
            pairs_ = mine @ chunks[candidate].T
            scores.append(pairs_.max() if how == "max-sim" else pairs_.max(axis=1).mean())
        return [candidates[i] for i in np.argsort(-np.asarray(scores), kind="stable")]

    ranks: dict[str, list[int]] = {"mean": [], "max-sim": [], "chamfer": []}
    for document in documents:
        candidates = [hit.document_id for hit in similar_documents(user=user, document=document, k=RESCORE)]
        for how, ranking in (
            ("mean", candidates),
            ("max-sim", rescored(document.pk, candidates, "max-sim")),
            ("chamfer", rescored(document.pk, candidates, "chamfer")),
        ):
            target = other[document.pk]
            ranks[how].append(ranking.index(target) + 1 if target in ranking else RESCORE + 1)

    if args.pad:
        pad(user, documents, args.pad)

    # pgvector's query on the same rows, with the predicate and expression of the space's index.
    expression = document_expression(space.dimensions)
    bare_sql = (
        f"SELECT document_id FROM documents_documentvector WHERE space_id = {int(space.pk)} AND document_id <> %s "
        f"ORDER BY {expression} <=> (SELECT {expression} FROM documents_documentvector WHERE document_id = %s) "
        "LIMIT %s"
    )

    def bare(i: int) -> list[int]:
        with connection.cursor() as cursor:
            cursor.execute(bare_sql, [documents[i].pk, documents[i].pk, K])
            return [row[0] for row in cursor.fetchall()]

    def product(i: int) -> list[int]:
        return [hit.document_id for hit in similar_documents(user=user, document=documents[i], k=K)]

    count = len(documents)
    timings = _data.interleaved({"bare pgvector query": bare, "similar_documents()": product}, count)
    same = np.mean([set(a) == set(b) for a, b in zip(*(ids for _, ids in timings.values()), strict=True)])
    table = [["ranking", "top-1", "top-5", "mean rank (≤ 21)"]]
    for how, found in ranks.items():
        values = np.asarray(found)
        table.append([how, f"{np.mean(values == 1):.1%}", f"{np.mean(values <= 5):.1%}", f"{values.mean():.2f}"])
    table.append(["**speed**", "p50 ms", "p95 ms", "queries/s"])
    for name, (seconds, _) in timings.items():
        p50, p95, qps = _data.percentiles(seconds)
        table.append([name, f"{p50:.2f}", f"{p95:.2f}", f"{qps:.0f}"])
    plans = []  # which index each way reads (vector scans only), after the timed runs
    for way in (bare, product):
        shapes: list[str] = []

        def explained(execute, sql, params, many, context, shapes=shapes):
            if " <=> " in sql:
                execute("EXPLAIN (FORMAT JSON) " + sql, params, many, context)
                shapes.append(_data.plan_shape(context["cursor"].fetchone()[0]))
            return execute(sql, params, many, context)

        with connection.execute_wrapper(explained):
            way(0)
        vector_scans = [
            part
            for shape in shapes
            for part in shape.split(" → ")
            if "documentvector" in part or "document_vector" in part
        ]
        plans.append(f"{way.__name__}: {', '.join(dict.fromkeys(vector_scans))}")
    if args.pad:
        unpad(user)
    _common.report(
        args.quick,
        "Similar documents: the other half of a SciFact abstract (bench/similar_documents.py)",
        f"N={len(pairs)} abstracts → {count} documents, {per_document:.1f} chunks each "
        f"(CHUNK_SIZE_TOKENS={args.chunk_tokens}); local all-MiniLM-L6-v2 int8; k={K}, re-score of the top {RESCORE}; "
        f"speed over {count} lookups each, interleaved, one connection, among {count + args.pad:,} document "
        f"vectors ({args.pad:,} padding documents: a half's vector plus noise, in a second readable collection).",
        table,
        f"The two speed rows return the same documents for {same:.0%} of the lookups. Vector scans: "
        + "; ".join(plans)
        + ".",
    )


if __name__ == "__main__":
    main()
