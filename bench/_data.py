"""Data for the search benchmarks (bench/search.py, bench/filtered_search.py, bench/hybrid_keyword.py).

- **SciFact sentences**: the abstracts of ``$RAG_SHARED_DIR/data/scifact/corpus.jsonl`` split into
  sentences and embedded with the offline all-MiniLM-L6-v2 through the app's own local
  backend. Embedding is slow on a small CPU, so the vectors are cached under ``var/bench-cache/``
  as a prefix: asking for more sentences later embeds only the new ones.
- **Clustered synthetic vectors**: documents drawn around topic centres, spread in a shared
  64-dimensional subspace plus a little isotropic noise (real sentence embeddings are neither
  uniform nor isotropic), L2-normalised like every backend's vectors.
- **Loading** as ``Chunk`` rows through the app's binary COPY path and their vectors into the collections'
  embedding space (its partition of the ChunkVector table, ``documents.spaces.vectors.write_vectors``), in
  the collections of two users (one owns most of the data, the other owns some, shares some), so that the
  permission filter in the SQL is real. The space's cosine HNSW index is dropped before the load and rebuilt
  after, as a bulk load should be, and the build is timed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass
from typing import Any

import _common
import numpy as np

CACHE = _common.ROOT / "var" / "bench-cache"
# A sentence ends at . ! or ? followed by space and a capital, digit or bracket ("p = 0.016)." stays whole).
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


def hnsw_index(space) -> str:
    """The name of ``space``'s cosine HNSW index (documents.spaces.storage)."""
    from documents.spaces import storage

    return storage.index_name(space, "cosine")


def bare_sql(space, *, where: str = "", limit: str = "10") -> str:
    """pgvector's documented query on the space's rows (alias ``v``), with the expression and predicate its index
    has: ``SELECT chunk_id FROM <chunk vectors> WHERE space_id = S AND distance = 'cosine' ORDER BY
    (embedding::vector(N)) <=> q LIMIT 10``; the query vector is the one ``%b`` parameter after ``where``'s."""
    from documents.spaces.storage import PARENT, vector_expression

    extra = f" AND {where}" if where else ""
    return (
        f"SELECT v.chunk_id FROM {PARENT} v WHERE v.space_id = {int(space.pk)} AND v.distance = 'cosine'{extra} "
        f"ORDER BY {vector_expression(space, 'v.embedding')} <=> %b::vector({int(space.dimensions)}) LIMIT {limit}"
    )


@dataclass
class Corpus:
    name: str
    texts: list[str]  # one per chunk
    titles: list[str]  # one per document
    doc_of: np.ndarray  # chunk -> document index
    vectors: np.ndarray  # (chunks, dim) float32, L2-normalised
    queries: np.ndarray  # (queries, dim)
    query_texts: list[str]


def normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def scifact_sentences() -> tuple[list[str], list[str], list[int]]:
    """Every SciFact sentence in file order, the abstracts' titles, and each sentence's abstract."""
    texts, titles, doc_of = [], [], []
    with _common.require_shared("data/scifact/corpus.jsonl").open() as corpus:
        for line in corpus:
            record = json.loads(line)
            sentences = [s.strip() for s in SENTENCE.split(record["text"]) if s.strip()]
            if not sentences:
                continue
            titles.append(record["title"])
            texts += sentences
            doc_of += [len(titles) - 1] * len(sentences)
    return texts, titles, doc_of


def scifact_claims() -> list[str]:
    """The dev-split claims (distinct), the questions SciFact asks of its abstracts."""
    claims: dict[str, None] = {}
    with _common.require_shared("data/scifact/queries-dev.jsonl").open() as queries:
        for line in queries:
            claims.setdefault(json.loads(line)["text"].strip(), None)
    return list(claims)


def scifact(*, sentences: int, queries: int) -> Corpus:
    """The first ``sentences`` SciFact sentences (0: all) embedded with MiniLM, and ``queries`` claims."""
    texts, titles, doc_of = scifact_sentences()
    if sentences:
        texts, doc_of = texts[:sentences], doc_of[:sentences]
    titles = titles[: doc_of[-1] + 1]
    vectors = embed_cached("scifact-sentences", texts)
    claims = scifact_claims()[:queries]
    return Corpus(
        name=f"SciFact sentences, MiniLM ({len(texts):,})", texts=texts, titles=titles,
        doc_of=np.asarray(doc_of), vectors=vectors, queries=embed_cached("scifact-claims", claims),
        query_texts=claims,
    )


def embed_cached(name: str, texts: list[str]) -> np.ndarray:
    """``texts`` embedded by the configured backend, cached under var/bench-cache/.

    The cache keeps a hash of each text: any request that starts with the cached texts reuses
    them (a smaller one slices, a larger one embeds only the rest).
    """
    from documents import embeddings

    backend = embeddings.get_backend()
    path = CACHE / f"{name}-{re.sub(r'[^A-Za-z0-9]+', '-', backend.model_name)}.npz"
    hashes = np.asarray([int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little") for t in texts],
                        dtype=np.uint64)
    cached = np.zeros((0, backend.dimensions), dtype=np.float32)
    if path.exists():
        stored = np.load(path)
        same = min(len(stored["hashes"]), len(texts))
        mismatch = np.flatnonzero(stored["hashes"][:same] != hashes[:same])
        cached = stored["vectors"][: mismatch[0] if len(mismatch) else same]
    if len(cached) == len(texts):
        return cached
    missing = texts[len(cached):]
    print(f"embedding {len(missing):,} texts ({name}) with {backend.model_name}, cached in {path} ...", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    started, parts = time.perf_counter(), [cached]
    for start in range(0, len(missing), 1024):
        parts.append(np.asarray(backend.embed_documents(missing[start: start + 1024]), dtype=np.float32))
        done = min(start + 1024, len(missing))
        vectors = np.concatenate(parts)
        with open(path.with_suffix(".tmp"), "wb") as out:  # an interrupted run keeps its progress
            np.savez(out, vectors=vectors, hashes=hashes[: len(vectors)])
        path.with_suffix(".tmp").replace(path)
        rate = done / (time.perf_counter() - started)
        print(f"  {done:,}/{len(missing):,} ({rate:.0f}/s, {(len(missing) - done) / rate:.0f} s left)", flush=True)
    return np.concatenate(parts)


def clustered(*, n: int, queries: int, dim: int = 384, chunks_per_document: int = 20, seed: int = 0,
              query_texts: list[str] | None = None) -> Corpus:
    """``n`` synthetic chunk vectors in documents around topic centres (about 100 chunks per topic).

    A document is its topic's centre moved along a shared 64-dimensional subspace; its chunks
    spread around it in that subspace, plus a little isotropic noise. Queries are chunks of unseen
    documents of random topics. Texts are SciFact sentences, cycled, so that rows have real widths.
    """
    rng = np.random.default_rng(seed)
    topics = max(1, n // 100)
    centres = normalise(rng.standard_normal((topics, dim)))
    basis = rng.standard_normal((64, dim)).astype(np.float32) / 8.0  # rows ~ unit length

    def chunks(doc_topics: np.ndarray, per_document: int) -> np.ndarray:
        docs = centres[doc_topics] + 0.6 * normalise(rng.standard_normal((len(doc_topics), 64)) @ basis)
        repeated = np.repeat(docs, per_document, axis=0)
        spread = normalise(rng.standard_normal((len(repeated), 64)).astype(np.float32) @ basis)
        noise = normalise(rng.standard_normal((len(repeated), dim)))
        return normalise(repeated + 0.45 * spread + 0.25 * noise)

    documents = -(-n // chunks_per_document)
    parts = []
    for start in range(0, documents, 5000):  # in blocks: 1M vectors would need several copies at once
        parts.append(chunks(rng.integers(0, topics, size=min(5000, documents - start)), chunks_per_document))
    vectors = np.concatenate(parts)[:n]
    sentences, _, _ = scifact_sentences()
    texts = [sentences[i % len(sentences)] for i in range(n)]
    doc_of = np.arange(n) // chunks_per_document
    return Corpus(
        name=f"synthetic clustered ({n:,})", texts=texts, titles=[f"synthetic document {i}" for i in range(documents)],
        doc_of=doc_of, vectors=vectors, queries=chunks(rng.integers(0, topics, size=queries), 1),
        query_texts=query_texts[:queries] if query_texts else [f"synthetic query {i}" for i in range(queries)],
    )


@dataclass
class Loaded:
    space: Any  # the collections' embedding space (documents.models.EmbeddingSpace)
    chunk_ids: np.ndarray  # database id of each corpus chunk
    collection_of: np.ndarray  # collection id of each corpus chunk
    collections: dict  # name -> Collection
    user: object  # who searches ("alice")
    other: object  # the other user ("bob")
    load_seconds: float


def load(corpus: Corpus, *, layout: list[tuple[str, str, bool, float]], seed: int = 0) -> Loaded:
    """Replace every chunk with ``corpus``, documents spread over ``layout`` collections.

    ``layout``: (collection name, owner "alice" or "bob", shared with alice, fraction of the chunks).
    Whole documents go to one collection, picked at random until each has its share of chunks.
    """
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from psycopg.types.json import Jsonb

    from documents.models import Chunk, Collection, Document
    from documents.spaces.storage import partition_name
    from documents.spaces.vectors import write_vectors
    from documents.store import copy_chunk_rows

    started = time.perf_counter()
    users = {}
    for name in ("alice", "bob"):
        users[name], created = get_user_model().objects.get_or_create(username=name)
        if created:
            users[name].set_unusable_password()
            users[name].save()
    with connection.cursor() as cursor:
        # The chunk vectors (every space's partition) and document vectors go with them.
        cursor.execute("TRUNCATE documents_chunk, documents_document RESTART IDENTITY CASCADE")
    Collection.objects.all().delete()
    collections = {}
    for name, owner, shared, _ in layout:
        collections[name] = Collection.objects.create(name=name, owner=users[owner])
        if shared:
            collections[name].members.add(users["alice"])
    space = next(iter(collections.values())).active_space  # the configured backend's (documents.spaces)
    if space.dimensions != corpus.vectors.shape[1]:
        raise SystemExit(f"the corpus has {corpus.vectors.shape[1]}-dimensional vectors, the space {space.name} "
                         f"{space.dimensions}: set EMBEDDING_* to the model that made them")
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {hnsw_index(space)}")
    # Documents at random into the collections, in proportion to chunks.
    documents = len(corpus.titles)
    sizes = np.bincount(corpus.doc_of, minlength=documents)
    order = np.random.default_rng(seed).permutation(documents)
    bounds = np.cumsum([fraction for *_, fraction in layout]) * len(corpus.texts)
    assigned = np.searchsorted(bounds, np.cumsum(sizes[order]) - sizes[order], side="right")
    doc_collection = np.empty(documents, dtype=np.int64)
    doc_collection[order] = [collections[layout[min(i, len(layout) - 1)][0]].pk for i in assigned]
    owners = {c.pk: c.owner_id for c in collections.values()}
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    with transaction.atomic():
        docs = Document.objects.bulk_create(
            [
                Document(owner_id=owners[int(doc_collection[i])], collection_id=int(doc_collection[i]),
                         title=corpus.titles[i][:300], file=f"bench/{i}", sha256=f"{i:064x}",
                         status=Document.Status.READY, progress=1.0, chunk_count=int(sizes[i]))
                for i in range(documents)
            ],
            batch_size=5000,
        )
        doc_ids = np.asarray([d.pk for d in docs])
        ordinals = np.arange(len(corpus.texts)) - first[corpus.doc_of]
        empty = Jsonb({})
        copy_chunk_rows(
            (int(doc_ids[d]), int(doc_collection[d]), int(ordinals[i]), corpus.texts[i], None, corpus.titles[d][:300],
             0, len(corpus.texts[i]), 0, empty)
            for i, d in enumerate(corpus.doc_of)
        )
        with connection.cursor() as cursor:
            cursor.execute("SELECT id, document_id, ordinal FROM documents_chunk")
            rows = np.asarray(cursor.fetchall(), dtype=np.int64)
        position = {int(d): i for i, d in enumerate(doc_ids)}
        chunk_ids = np.empty(len(corpus.texts), dtype=np.int64)
        for chunk_id, document_id, ordinal in rows:
            chunk_ids[first[position[int(document_id)]] + ordinal] = chunk_id
        write_vectors(space=space, rows=(
            (int(chunk_ids[i]), int(doc_collection[d]), int(doc_ids[d]), "cosine", corpus.vectors[i])
            for i, d in enumerate(corpus.doc_of)
        ))
    with connection.cursor() as cursor:
        # Hint bits and statistics before anything is timed.
        cursor.execute(f"VACUUM ANALYZE documents_chunk, {partition_name(space)}")
        cursor.execute("ANALYZE documents_chunkvector")
    assert Chunk.objects.count() == len(corpus.texts)
    return Loaded(space=space, chunk_ids=chunk_ids, collection_of=doc_collection[corpus.doc_of],
                  collections=collections, user=users["alice"], other=users["bob"],
                  load_seconds=time.perf_counter() - started)


def build_hnsw(space, *, maintenance_work_mem: str | None = None, workers: int | None = None
               ) -> tuple[float, list[str]]:
    """(Re)build ``space``'s cosine HNSW index exactly as the app builds it (documents.spaces.storage);
    (seconds, server notices).

    ``None`` keeps the server's setting (the embedded server: maintenance_work_mem 64MB).
    """
    from django.db import connection

    from documents.spaces import storage

    notices: list[str] = []
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {hnsw_index(space)}")
        cursor.execute("RESET maintenance_work_mem")
        cursor.execute("RESET max_parallel_maintenance_workers")
        if maintenance_work_mem:
            cursor.execute(f"SET maintenance_work_mem = '{maintenance_work_mem}'")
        if workers is not None:
            cursor.execute(f"SET max_parallel_maintenance_workers = {int(workers)}")
    handler = lambda diagnostic: notices.append(diagnostic.message_primary)  # noqa: E731
    connection.connection.add_notice_handler(handler)
    started = time.perf_counter()
    storage.create_index(space, "cosine")
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("RESET maintenance_work_mem")
        cursor.execute("RESET max_parallel_maintenance_workers")
        cursor.execute(f"ANALYZE {storage.partition_name(space)}")
    connection.connection.remove_notice_handler(handler)
    return seconds, notices


def relation_mb(name: str) -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_size(%s::regclass)", [name])
        return cursor.fetchone()[0] / 2**20


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Row indexes of the exact ``k`` nearest rows by cosine (vectors are normalised), per query."""
    rows = np.arange(len(vectors)) if mask is None else np.flatnonzero(mask)
    subset = vectors[rows]
    result = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 64):
        scores = queries[start: start + 64] @ subset.T
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        ordered = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)
        result[start: start + 64] = rows[ordered]
    return result


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    """Mean recall@k of ``found`` (ids) against ``truth`` (ids), k = truth's width."""
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t.tolist())) / k for f, t in zip(found, truth, strict=True)]))


def percentiles(seconds: list[float]) -> tuple[float, float, float]:
    """(p50 ms, p95 ms, queries per second for one client)."""
    values = np.asarray(seconds)
    return float(np.percentile(values, 50) * 1000), float(np.percentile(values, 95) * 1000), len(values) / values.sum()


def interleaved(methods: dict, count: int, warmup: int = 5) -> dict[str, tuple[list[float], list[list[int]]]]:
    """Run every method on each query in turn, in a random order per query; {name: (seconds, ids) per query}.

    The first method to search near a query reads the index pages the next ones then find in
    shared_buffers: a fixed (or rotating) order would favour whoever follows the same index.
    """
    names = list(methods)
    for i in range(min(warmup, count)):
        for name in names:
            methods[name](i)
    result = {name: ([0.0] * count, [None] * count) for name in names}
    shuffle = np.random.default_rng(0)
    for i in range(count):
        for name in shuffle.permutation(names):
            started = time.perf_counter()
            ids = methods[name](i)
            result[name][0][i] = time.perf_counter() - started
            result[name][1][i] = ids
    return result


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def plan_shape(plan) -> str:
    """An EXPLAIN (FORMAT JSON) plan as its node types (and index names), outermost first."""
    if isinstance(plan, str):
        plan = json.loads(plan)
    nodes, shapes = [plan[0]["Plan"]], []
    while nodes:
        node = nodes.pop(0)
        shape = node["Node Type"] + (f" using {node['Index Name']}" if "Index Name" in node else "")
        if "Relation Name" in node and "Index Name" not in node:
            shape += f" on {node['Relation Name']}"
        shapes.append(shape)
        nodes = node.get("Plans", []) + nodes
    return " → ".join(shapes)


# The collections of the benches on a 1% collection: alice owns "corpus" (89% of the chunks) and "rare" (1%),
# bob owns "private" (10%).
ONE_PERCENT_LAYOUT = [("corpus", "alice", False, 0.89), ("rare", "alice", False, 0.01), ("private", "bob", False, 0.10)]


def one_percent_bench(description: str, database: str) -> tuple[argparse.Namespace, Corpus, Loaded, float]:
    """The command line, Django and the data of bench/filtered_search.py and bench/hybrid_keyword.py: clustered
    synthetic vectors with SciFact sentences as texts and claims as queries, loaded in ONE_PERCENT_LAYOUT into
    ``database`` (its HNSW index is the caller's to build). Also when it started (time.perf_counter)."""
    import secrets

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="2,000 chunks, 20 queries: not recorded (CI)")
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--label", default="", help="added to the title in BENCHMARKS.md (e.g. 'after ...')")
    args = parser.parse_args()
    if args.quick:
        args.chunks, args.queries = min(args.chunks, 2_000), 20
    _common.require_shared("data/scifact/corpus.jsonl")
    _common.setup_django(database, EMBEDDING_BACKEND="local", LOG_LEVEL="WARNING", DEBUG="false",
                         SECRET_KEY=secrets.token_urlsafe(32))
    started = time.perf_counter()
    corpus = clustered(n=args.chunks, queries=args.queries, seed=1, query_texts=scifact_claims())
    progress(f"== {corpus.name}: loading {len(corpus.texts):,} chunks")
    return args, corpus, load(corpus, layout=ONE_PERCENT_LAYOUT, seed=1), started
