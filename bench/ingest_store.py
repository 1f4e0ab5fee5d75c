"""Storing 100k chunks: our store vs. raw binary COPY of the same searchable state (the limit) vs. langchain-postgres.

    python bench/ingest_store.py [--rows 100000] [--per-document 50] [--quick] [--no-peer] [--peer-hnsw]

The same precomputed chunks (text made of SciFact sentences, 200-300 words each; clustered,
L2-normalised 384-d float32 vectors; per-document JSON metadata) are stored in several ways, in
the benchmark's own database (``ragbench_ingest_store``):

1. Into empty tables without an HNSW index (what storing itself costs):
   - **ours**: ``documents.store.store_chunks``, the exact function the worker calls, once per
     document (``--per-document`` chunks, 50 by default: a report of ~35 pages), so each document
     is one transaction with its row lock and status update, into the app's ``documents_chunk`` (the text)
     and the collection's embedding space (its partition of ``documents_chunkvector``: the vectors);
   - **raw COPY + statistics**: one binary ``COPY`` of all the chunk rows (ids taken from their sequence
     first, in one statement) into a table made with ``CREATE TABLE ... (LIKE documents_chunk INCLUDING
     ALL)`` (same columns, generated tsvector, indexes and defaults; no foreign keys and no triggers:
     ``LIKE`` copies none) and one of their vectors into a table ``LIKE`` the space's partition, then, in
     the same transaction, one set-based statement that adds their BM25 statistics to a
     ``LIKE documents_termstat`` table and their collection's totals: the limit for the searchable
     state ours reaches (chunks, full-text vector, vectors, BM25 statistics);
   - the same with one COPY, one statistics statement and one transaction per document (on a fifth
     of the rows): what the worker's commits cost without its other statements;
   - the same with one COPY and one transaction per slice, as the limit, but one statistics statement per
     document: issue 17's example of the same searchable state ("raw COPY plus one set-based statistics update
     per document");
   - raw COPY of the chunks only, no statistics (on a fifth of the rows): what the statistics cost;
   - the same into a table without the full-text column (and so without its GIN index): what the full text costs,
     which langchain-postgres does not store;
   - ours with the statistics trigger disabled (on a fifth of the rows, documents of their own): ours without
     any statistics, the bound of every way of keeping them;
   - **langchain-postgres**: ``PGVector.add_embeddings`` in batches of 1000, run by
     ``bench/peer_langchain_store.py`` in the peer's own venv (``_common.peer_python()``), into
     the table it creates for itself (the chunk fields go into its GIN-indexed JSONB metadata);
   - the same with one ``add_embeddings`` call per document (``--per-document`` rows: each call is one
     transaction), on a fifth of the rows: langchain-postgres at the worker's unit, one document stored
     as soon as it is embedded, as ours is measured.
2. The HNSW index built after that load (``CREATE INDEX`` with ``maintenance_work_mem`` raised
   and the parallel maintenance workers the machine has).
3. With that index present, holding the rows of 1., ``--extra`` more rows (rows / 20) arrive,
   by raw COPY and by ours into ``documents_chunk`` and the space's partition themselves: inserting into an
   existing index.
   ``--peer-hnsw`` does the same for langchain-postgres (building its index too: ~3 min more).

Each way runs in slices, taking turns with the others in a rotating order, after a CHECKPOINT
at the start of each part, with autovacuum off on the tables. Appends one table to bench/BENCHMARKS.md and
ends with one line of key=value figures. ``--quick`` (2,000 rows) is for development and CI, not recorded.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

DATABASE = "ragbench_ingest_store"
# The raw ways' tables: all but the third with their own BM25 statistics (the same searchable state as ours),
# the third without (chunks only: what the statistics cost).
RAW_TABLES = ("bench_raw_chunk", "bench_raw_chunk_per_doc", "bench_raw_chunk_only", "bench_raw_chunk_stats_per_doc",
              "bench_raw_chunk_no_full_text")
# The last one without the full-text column and its GIN index: what storing less, as langchain-postgres does, saves.
NO_FULL_TEXT = RAW_TABLES[-1]
RAW_TERMSTATS = ("bench_raw_termstat", "bench_raw_termstat_per_doc", "bench_raw_termstat_stats_per_doc")
DIMENSIONS = 384
LANGCHAIN_BATCH = 1000
SLICES = 8  # each way's rows in turns, see interleaved()
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")
DEPARTMENTS = ("Research", "Clinical", "Regulatory", "Quality", "Legal", "Medical Affairs", "Data Science")
TAGS = ("oncology", "immunology", "genomics", "trial", "protocol", "review", "cardiology", "neurology", "safety")
AUTHORS = ("A. Rivera", "B. Chen", "C. Okafor", "D. Novak", "E. Haddad", "F. Larsen", "G. Tanaka", "H. Müller")


# --------------------------------------------------------------------------------------------
# The data: realistic text, clustered vectors, per-document metadata (not timed)


def make_corpus(*, rows: int, per_document: int, seed: int = 7):
    """Documents (title, metadata) and their chunk drafts and vectors, deterministic for a seed."""
    from documents.chunking import ChunkDraft

    corpus = _common.require_shared("data/scifact/corpus.jsonl")
    abstracts = [json.loads(line) for line in corpus.open(encoding="utf-8") if line.strip()]
    sentences = [s for a in abstracts for s in SENTENCE.split(a["text"]) if len(s) > 20]
    titles = [a["title"] for a in abstracts]
    rng = random.Random(seed)
    documents, drafts = [], []
    for number in range((rows + per_document - 1) // per_document):
        title = titles[number % len(titles)]
        documents.append({
            "title": title[:300],
            "metadata": {
                "source": "upload", "filename": f"report-{number:05d}.pdf", "title": title[:120],
                "author": rng.choice(AUTHORS), "department": rng.choice(DEPARTMENTS),
                "tags": rng.sample(TAGS, 3), "language": "en",
                "published": f"20{rng.randint(10, 25)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                "pages": per_document // 3 + 1, "version": rng.randint(1, 5),
            },
        })
        offset = 0
        for ordinal in range(min(per_document, rows - len(drafts))):
            target = rng.randint(200, 300)
            start = rng.randrange(len(sentences))
            words, parts = 0, []
            while words < target:
                sentence = sentences[(start + len(parts)) % len(sentences)]
                parts.append(sentence)
                words += sentence.count(" ") + 1
            text = " ".join(parts)
            drafts.append(ChunkDraft(
                ordinal=ordinal, text=text, page=ordinal // 3 + 1,
                heading=f"{title[:80]} > Section {ordinal // 5 + 1}" if ordinal % 2 else "",
                char_start=offset, char_end=offset + len(text), token_count=int(words * 1.3),
            ))
            offset += len(text) + 2
    return documents, drafts, clustered_vectors(rows, seed=seed)


def clustered_vectors(rows: int, *, seed: int, clusters: int = 200) -> np.ndarray:
    """Unit vectors around random topic centres, like the embeddings of a real collection."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIMENSIONS)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = centres[rng.integers(0, clusters, rows)] + rng.standard_normal((rows, DIMENSIONS)).astype(
        np.float32
    ) * np.float32(0.06)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Helpers on the bench database


def execute(sql: str, params=None):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else None


def checkpoint() -> None:
    """Start every timed run with clean buffers: no checkpoint debt from the previous one."""
    from django.db import DatabaseError

    try:
        execute("CHECKPOINT")
    except DatabaseError:
        pass  # not a superuser (nor pg_checkpoint): the runs are a little noisier, nothing more


def hnsw_indexes(table: str) -> list[tuple[str, str]]:
    return [
        (name, definition) for name, definition in execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexdef ILIKE '%%USING hnsw%%' "
            "ORDER BY indexname", [table],
        )
    ]


def app_hnsw_indexes(space) -> list[tuple[str, str]]:
    """The space's cosine HNSW index as the app builds it (documents.spaces.storage; a run stopped midway may have
    dropped it: then it is made again, on the partition emptied first)."""
    from documents.spaces import storage

    partition = storage.partition_name(space)
    if not hnsw_indexes(partition):
        storage.create_index(space, "cosine")
    return hnsw_indexes(partition)


def drop_indexes(indexes: list[tuple[str, str]]) -> None:
    for name, _ in indexes:
        execute(f'DROP INDEX IF EXISTS "{name}"')


def build_indexes(indexes: list[tuple[str, str]]) -> float:
    """CREATE the indexes as a bulk import would: memory for the whole graph, parallel workers."""
    from django.db import transaction

    started = time.perf_counter()
    with transaction.atomic():
        execute(f"SET LOCAL maintenance_work_mem = '{maintenance_work_mem_mb()}MB'")
        execute(f"SET LOCAL max_parallel_maintenance_workers = {parallel_workers()}")
        for _, definition in indexes:
            execute(definition)
    return time.perf_counter() - started


def maintenance_work_mem_mb() -> int:
    import psutil

    # The graph of 100k 384-d vectors needs ~250 MB; never take more than a quarter of the memory.
    return int(min(2048, psutil.virtual_memory().total / 2**20 / 4))


def parallel_workers() -> int:
    return max(0, (os.cpu_count() or 1) - 1)


def index_summary(table: str, vectors: str) -> str:
    """The indexes of a chunk table and of its vectors' table."""
    parts = []
    for name in (table, vectors):
        rows = execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", [name])
        kinds = []
        for (definition,) in rows:
            method = re.search(r"USING (\w+)", definition).group(1)
            kinds.append("unique btree" if "UNIQUE" in definition and method == "btree" else method)
        parts.append(", ".join(f"{kinds.count(k)}× {k}" for k in sorted(set(kinds))))
    return f"chunks: {parts[0]}; vectors: {parts[1]}"


def raw_tables(number: int) -> tuple[str, str]:
    return RAW_TABLES[number], vector_table(RAW_TABLES[number])


# --------------------------------------------------------------------------------------------
# The three ways to store


def create_documents(documents_data, owner, collection, *, first: int = 0):
    """Document rows as the worker finds them (status processing); not timed."""
    from documents.models import Document

    return Document.objects.bulk_create([
        Document(
            owner=owner, collection=collection, title=data["title"], file=f"bench/{first + number}",
            original_filename=data["metadata"]["filename"], content_type="application/pdf",
            sha256=f"{first + number:064x}", status=Document.Status.PROCESSING, metadata=data["metadata"],
        )
        for number, data in enumerate(documents_data)
    ])


# The trigger that adds stored chunks to the BM25 statistics (migration 0003): what the statistics cost ours.
STATISTICS_TRIGGER = "documents_chunk_stats_insert"


def run_ours_without_statistics(documents, drafts, vectors, per_document: int) -> float:
    """Ours with the statistics trigger disabled (not timed): what ours costs with statistics that cost nothing,
    the bound of any way of keeping them (the chunks it stores are missing from them; the bench only counts)."""
    execute(f"ALTER TABLE documents_chunk DISABLE TRIGGER {STATISTICS_TRIGGER}")
    try:
        return run_ours(documents, drafts, vectors, per_document)
    finally:
        execute(f"ALTER TABLE documents_chunk ENABLE TRIGGER {STATISTICS_TRIGGER}")


def run_ours(documents, drafts, vectors, per_document: int) -> float:
    """The worker's store, one call (one transaction) per document."""
    from documents.models import Chunk
    from documents.store import store_chunks

    before = Chunk.objects.count()
    started = time.perf_counter()
    for number, document in enumerate(documents):
        window = slice(number * per_document, (number + 1) * per_document)
        store_chunks(document=document, drafts=drafts[window], vectors=vectors[window])
    elapsed = time.perf_counter() - started
    assert Chunk.objects.count() - before == len(drafts)
    return elapsed


# The BM25 statistics of some documents' rows, as one set-based statement: what a raw load must also
# do to reach the searchable state ours reaches (the same statement as the insert trigger, migration 0010).
RAW_STATISTICS = """
    WITH words AS (
        INSERT INTO {termstat} (collection_id, lexeme, df)
        SELECT c.collection_id, u.lexeme, count(*) FROM {table} c, unnest(tsvector_to_array(c.search_vector)) u (lexeme)
        WHERE c.document_id = ANY(%(documents)s)
        GROUP BY 1, 2 ORDER BY 1, u.lexeme COLLATE "C"
        ON CONFLICT (collection_id, lexeme) DO UPDATE SET df = {termstat}.df + EXCLUDED.df
    )
    UPDATE documents_collection g SET chunk_total = g.chunk_total + s.n, token_total = g.token_total + s.t
    FROM (SELECT count(*) AS n, sum(token_count) AS t FROM {table} WHERE document_id = ANY(%(documents)s)) s
    WHERE g.id = %(collection)s
"""


def run_raw(tables: tuple[str, str], space, documents, drafts, vectors, per_document: int, *,
            per_document_transactions=False, statistics: tuple[str, int] | None = None,
            statistics_per_document=False) -> float:
    """Binary COPY of the same rows into ``tables`` (chunks, vectors): the chunks' ids taken from their sequence
    in one statement, then one COPY of the chunks and one of their vectors, in one transaction (the limit), or
    in one transaction per document (the worker's transactions without its statements). With ``statistics``
    (a term-statistics table and the collection whose totals it counts), the rows' BM25 statistics
    follow in the same transaction, by one set-based statement per COPY: the same searchable state
    as ours, whose triggers do that work; with ``statistics_per_document``, by one statement per document
    (in the same one transaction: each word's row is then updated once per document by that transaction,
    and those versions cannot be pruned before it ends)."""
    from django.db import transaction
    from psycopg.types.json import Jsonb

    from documents.db import vector_cursor
    from documents.spaces.vectors import COPY_COLUMNS as VECTOR_COLUMNS
    from documents.store import COPY_COLUMNS

    table, vectors_table = tables
    columns = [("id", "int8"), *COPY_COLUMNS]
    copy_sql = f"COPY {table} ({', '.join(name for name, _ in columns)}) FROM STDIN WITH (FORMAT BINARY)"
    vector_sql = (f"COPY {vectors_table} ({', '.join(name for name, _ in VECTOR_COLUMNS)}) "
                  "FROM STDIN WITH (FORMAT BINARY)")
    ids_sql = f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, %s)"
    collection_id = statistics[1] if statistics else documents[0].collection_id
    statistics_sql = RAW_STATISTICS.format(termstat=statistics[0], table=table) if statistics else ""
    batches = ([range(n * per_document, (n + 1) * per_document) for n in range(len(documents))]
               if per_document_transactions else [range(len(drafts))])
    before = execute(f"SELECT count(*) FROM {table}")[0][0]
    started = time.perf_counter()
    for batch in batches:
        with transaction.atomic(), vector_cursor() as cursor:
            cursor.execute(ids_sql, [len(batch)])
            ids = [row[0] for row in cursor.fetchall()]
            with cursor.copy(copy_sql) as copy:
                copy.set_types([pg_type for _, pg_type in columns])
                for chunk_id, index in zip(ids, batch, strict=True):
                    draft, document = drafts[index], documents[index // per_document]
                    copy.write_row((
                        chunk_id, document.pk, collection_id, draft.ordinal, draft.text, draft.page, draft.heading,
                        draft.char_start, draft.char_end, draft.token_count, Jsonb(document.metadata),
                    ))
            with cursor.copy(vector_sql) as copy:
                copy.set_types([pg_type for _, pg_type in VECTOR_COLUMNS])
                for chunk_id, index in zip(ids, batch, strict=True):
                    document = documents[index // per_document]
                    copy.write_row((chunk_id, space.pk, collection_id, document.pk, "cosine", vectors[index]))
            if statistics:
                # The rows through the document_id index, as the trigger's transition table hands them over:
                # without statistics on the fresh rows (autovacuum is off) the planner would scan them all.
                cursor.execute("SET LOCAL enable_seqscan = off")
                numbers = sorted({index // per_document for index in batch})
                for group in ([[n] for n in numbers] if statistics_per_document else [numbers]):
                    cursor.execute(statistics_sql, {"documents": [documents[n].pk for n in group],
                                                    "collection": collection_id})
    elapsed = time.perf_counter() - started
    assert execute(f"SELECT count(*) FROM {table}")[0][0] - before == len(drafts)
    return elapsed


def vector_table(table: str) -> str:
    """The raw way's table of vectors beside its chunk table ``table``."""
    return f"{table}_vector"


def write_peer_data(folder: Path, documents, drafts, vectors, per_document: int) -> None:
    np.save(folder / "vectors.npy", vectors)
    with (folder / "chunks.jsonl").open("w", encoding="utf-8") as out:
        for index, draft in enumerate(drafts):
            document = documents[index // per_document]
            # langchain-postgres has one JSONB column for everything that is not text or vector.
            metadata = {**document.metadata, "document_id": document.pk, "ordinal": draft.ordinal,
                        "page": draft.page, "heading": draft.heading, "char_start": draft.char_start,
                        "char_end": draft.char_end, "token_count": draft.token_count}
            out.write(json.dumps({"text": draft.text, "metadata": metadata}) + "\n")


def run_peer(python: str, folder: Path, start: int, stop: int, *, build_after: bool = False,
             batch: int = LANGCHAIN_BATCH) -> dict:
    command = [
        python, str(Path(__file__).with_name("peer_langchain_store.py")), "--url", _common.database_url(DATABASE),
        "--data", str(folder), "--start", str(start), "--stop", str(stop), "--batch", str(batch),
        "--maintenance-work-mem", f"{maintenance_work_mem_mb()}MB", "--parallel-workers", str(parallel_workers()),
    ]
    if build_after:
        command.append("--build-hnsw-after")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"the langchain-postgres peer failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="chunks loaded into each empty table")
    parser.add_argument("--extra", type=int, default=0,
                        help="chunks then added with the HNSW index holding --rows (default: rows / 20)")
    parser.add_argument("--per-document", type=int, default=50, help="chunks per document (one store call each)")
    parser.add_argument("--quick", action="store_true", help="2,000 + 200 chunks: not recorded (CI)")
    parser.add_argument("--no-peer", action="store_true", help="skip langchain-postgres")
    parser.add_argument("--peer-hnsw", action="store_true",
                        help="also build langchain-postgres's HNSW index and add --extra rows to it (~3 min more)")
    parser.add_argument("--label", default="", help="added to the title in BENCHMARKS.md (e.g. 'before ...')")
    args = parser.parse_args()
    rows = 2_000 if args.quick else args.rows
    per_document = args.per_document
    extra_unit = SLICES // 2 * per_document
    extra = args.extra or max(extra_unit, rows // 20 // extra_unit * extra_unit)
    if rows % (5 * SLICES * per_document) or extra % extra_unit:
        sys.exit(f"--rows must be a multiple of {5 * SLICES} documents and --extra of {SLICES // 2} (runs are sliced)")

    _common.setup_django(DATABASE, EMBEDDING_BACKEND="hashing", LOG_LEVEL="WARNING",
                         # What a production worker runs with: no query log kept per statement.
                         DEBUG="false", SECRET_KEY="benchmark-only-not-a-secret")
    from django.contrib.auth import get_user_model

    from documents.models import Collection
    from documents.spaces import storage

    peer = None if args.no_peer else _common.peer_python()
    began = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    # The rows, then two sets of extra rows: raw COPY and ours each add their own to the indexed table
    # (the same vectors twice would be cheap duplicates for HNSW: pgvector stores them once).
    documents_data, drafts, vectors = make_corpus(rows=rows + 2 * extra, per_document=per_document)
    words = sum(d.text.count(" ") + 1 for d in drafts) / len(drafts)
    print(f"{rows:,} + {extra:,} chunks, {per_document} per document, {words:.0f} words per chunk on average "
          f"({time.perf_counter() - began:.1f} s to make)", flush=True)

    owner, _ = get_user_model().objects.get_or_create(username="bench")
    collection, _ = Collection.objects.get_or_create(owner=owner, name="ingest-store")
    space = collection.active_space  # the configured backend's (hashing, EMBEDDING_DIMENSIONS)
    if space.dimensions != DIMENSIONS:
        sys.exit(f"the bench's vectors have {DIMENSIONS} dimensions, the space {space.name} {space.dimensions}")
    partition = storage.partition_name(space)
    # The chunk vectors (every space's partition) go with the chunks. The term statistics too (TRUNCATE fires no
    # trigger): ours starts from none, as each raw way does in its new table, not from an earlier run's.
    execute("TRUNCATE documents_chunk, documents_document, documents_termstat RESTART IDENTITY CASCADE")
    Collection.objects.filter(pk=collection.pk).update(chunk_total=0, token_total=0)
    execute("DROP TABLE IF EXISTS langchain_pg_embedding, langchain_pg_collection CASCADE")
    app_hnsw = app_hnsw_indexes(space)
    for table in RAW_TABLES:
        execute(f"DROP TABLE IF EXISTS {table}, {vector_table(table)}")
        execute(f"CREATE TABLE {table} (LIKE documents_chunk INCLUDING ALL)")
        if table == NO_FULL_TEXT:
            execute(f"ALTER TABLE {table} DROP COLUMN search_vector")  # and its GIN index
        execute(f"CREATE TABLE {vector_table(table)} (LIKE {partition} INCLUDING ALL)")
        drop_indexes(hnsw_indexes(vector_table(table)))
    for table in RAW_TERMSTATS:
        execute(f"DROP TABLE IF EXISTS {table}")
        execute(f"CREATE TABLE {table} (LIKE documents_termstat INCLUDING ALL)")
    # Each raw way with statistics counts its totals on a collection row of its own.
    raw_collections = [
        Collection.objects.get_or_create(owner=owner, name=f"ingest-store-{table}")[0].pk for table in RAW_TERMSTATS
    ]
    Collection.objects.filter(pk__in=raw_collections).update(chunk_total=0, token_total=0)
    drop_indexes(app_hnsw)
    # Autovacuum would wake up on whichever table crosses its threshold first, in the middle of a run.
    for table in ("documents_chunk", "documents_document", partition, *RAW_TABLES, *map(vector_table, RAW_TABLES)):
        execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")


    base_docs, extra_docs = rows // per_document, extra // per_document
    documents = create_documents(documents_data[:base_docs], owner, collection)
    # Raw COPY and ours each add their extra rows to the same table: two sets of documents.
    extra_raw = create_documents(documents_data[base_docs : base_docs + extra_docs], owner, collection,
                                 first=base_docs)
    extra_ours = create_documents(documents_data[base_docs + extra_docs :], owner, collection,
                                  first=base_docs + extra_docs)
    # Ours without statistics stores a fifth of the rows again, as documents of their own.
    without_statistics = create_documents(documents_data[: base_docs // 5], owner, collection,
                                          first=base_docs + 2 * extra_docs)
    results: dict[tuple[str, str], float] = {}
    counts: dict[tuple[str, str], int] = {}
    indexes: dict[tuple[str, str], str] = {}
    builds: dict[str, float] = {}

    def part(items, number, parts):
        size = len(items) // parts
        return items[number * size : (number + 1) * size]

    def interleaved(runs, parts: int, hnsw: str) -> None:
        """Every way in ``parts`` slices, taking turns in an order rotated at every slice, so that the
        changing load of this shared machine, and what a run leaves to the next (dirty pages to
        write back), weigh on every way alike."""
        for number in range(parts):
            figures = []
            for way, run, docs, first_row in runs[number % len(runs) :] + runs[: number % len(runs)]:
                docs = part(docs, number, parts)
                count = len(docs) * per_document
                start = first_row + number * count
                if run is None or isinstance(run, int):  # langchain-postgres, in its own process (int: its batch)
                    figures_peer = run_peer(peer, Path(folder), start, start + count, batch=run or LANGCHAIN_BATCH)
                    indexes.setdefault((way, hnsw), figures_peer["indexes"])
                    seconds = figures_peer["seconds"]
                else:
                    seconds = run(docs, drafts[start : start + count], vectors[start : start + count], per_document)
                results[way, hnsw] = results.get((way, hnsw), 0.0) + seconds
                counts[way, hnsw] = counts.get((way, hnsw), 0) + count
                figures.append(f"{way} {count / seconds:,.0f}")
            print(f"  slice {number + 1}/{parts}, rows/s: {', '.join(figures)}", flush=True)

    with tempfile.TemporaryDirectory(prefix="ingest-store-") as folder:
        if peer:
            write_peer_data(Path(folder), documents + extra_raw + extra_ours, drafts, vectors, per_document)

        # 1. No HNSW index, empty tables: what storing itself costs.
        print(f"1. {rows:,} rows into empty tables without an HNSW index", flush=True)
        indexes["ours", "absent"] = indexes["ours without statistics", "absent"] = index_summary(
            "documents_chunk", partition)
        for way in ("raw", "raw per doc", "raw chunks only", "raw statistics per doc"):
            indexes[way, "absent"] = index_summary(RAW_TABLES[0], vector_table(RAW_TABLES[0]))
        indexes["raw no full text", "absent"] = index_summary(NO_FULL_TEXT, vector_table(NO_FULL_TEXT))
        checkpoint()
        # One COPY and one commit per document without our statements: a fifth of the rows is
        # enough for its rate, and keeps the whole run under 15 minutes.
        sampled = [document for number, document in enumerate(documents) if number % 5 == 0]
        interleaved([
            ("ours", run_ours, documents, 0),
            ("ours without statistics", run_ours_without_statistics, without_statistics, 0),
            ("raw", functools.partial(run_raw, raw_tables(0), space,
                                      statistics=(RAW_TERMSTATS[0], raw_collections[0])), documents, 0),
            ("raw per doc", functools.partial(run_raw, raw_tables(1), space, per_document_transactions=True,
                                              statistics=(RAW_TERMSTATS[1], raw_collections[1])), sampled, 0),
            ("raw chunks only", functools.partial(run_raw, raw_tables(2), space), sampled, 0),
            ("raw no full text", functools.partial(run_raw, raw_tables(4), space), sampled, 0),
            ("raw statistics per doc", functools.partial(
                run_raw, raw_tables(3), space, statistics=(RAW_TERMSTATS[2], raw_collections[2]),
                statistics_per_document=True), documents, 0),
            *([("langchain", None, documents, 0), ("langchain per doc", per_document, sampled, 0)] if peer else []),
        ], SLICES, "absent")

        # 2. The HNSW index built after the load, as a bulk import would.
        checkpoint()
        builds["ours"] = build_indexes(app_hnsw)
        print(f"2. HNSW index built after loading {rows:,} rows in {builds['ours']:.1f} s", flush=True)
        if peer and args.peer_hnsw:
            builds["langchain"] = run_peer(peer, Path(folder), rows, rows, build_after=True)["build_seconds"]

        # 3. With the HNSW index present, holding those rows: `extra` more rows arrive, by raw COPY
        # and by ours into the same table.
        print(f"3. {extra:,} more rows into the table whose HNSW index holds {rows:,}", flush=True)
        indexes["ours", "present"] = indexes["raw", "present"] = index_summary("documents_chunk", partition)
        checkpoint()
        interleaved([
            ("raw", functools.partial(run_raw, ("documents_chunk", partition), space), extra_raw, rows),
            ("ours", run_ours, extra_ours, rows + extra),
            *([("langchain", None, extra_ours, rows + extra)] if peer and args.peer_hnsw else []),
        ], SLICES // 2, "present")

    # Leave the database small and as migrated: the next run starts from empty tables anyway.
    for table in (*RAW_TABLES, *map(vector_table, RAW_TABLES), *RAW_TERMSTATS):
        execute(f"DROP TABLE IF EXISTS {table}")
    execute("DROP TABLE IF EXISTS langchain_pg_embedding, langchain_pg_collection CASCADE")
    execute("TRUNCATE documents_chunk, documents_document RESTART IDENTITY CASCADE")
    for table in ("documents_chunk", "documents_document", partition):
        execute(f"ALTER TABLE {table} RESET (autovacuum_enabled)")
    report(args, rows, extra, per_document, words, results, counts, indexes, builds, load_at_start)


def report(args, rows, extra, per_document, words, results, counts, indexes, builds, load_at_start) -> None:
    ours = "**ours**: `store_chunks`, one call and one transaction per document"
    names = {
        ("ours", "absent"): ours,
        ("raw", "absent"): f"raw binary COPY into `{RAW_TABLES[0]}` + the BM25 statistics (one set-based "
                           f"statement into `{RAW_TERMSTATS[0]}`), in one transaction: **the limit** "
                           "for the same searchable state",
        ("ours without statistics", "absent"): "ours, the statistics trigger disabled: **no statistics** (what they "
                                               "cost ours; no way of keeping them can be faster)",
        ("raw per doc", "absent"): f"raw binary COPY into `{RAW_TABLES[1]}` + the BM25 statistics, one COPY, one "
                                   "statistics statement and one transaction per document (the worker's commits "
                                   "without its other statements)",
        ("raw statistics per doc", "absent"): f"raw binary COPY into `{RAW_TABLES[3]}` + the BM25 statistics by one "
                                              "set-based statement per document, in one transaction (issue 17's "
                                              "example of the same searchable state)",
        ("raw chunks only", "absent"): f"raw binary COPY into `{RAW_TABLES[2]}`, one COPY in one transaction, "
                                       "**no statistics** (what they cost; the limit until 2026-12-01)",
        ("raw no full text", "absent"): f"raw binary COPY into `{NO_FULL_TEXT}`, as the one before but **without the "
                                        "full-text column** and its GIN index (what langchain-postgres does not store)",
        ("langchain", "absent"): f"langchain-postgres `PGVector.add_embeddings`, batches of {LANGCHAIN_BATCH}",
        ("langchain per doc", "absent"): f"langchain-postgres `PGVector.add_embeddings`, one call (one transaction) "
                                         f"per document of {per_document} chunks, as ours",
        ("ours", "present"): ours,
        ("raw", "present"): "raw binary COPY into `documents_chunk` and the space's partition themselves (the "
                            "chunks' triggers keep the statistics), one COPY each in one transaction",
        ("langchain", "present"): f"langchain-postgres `PGVector.add_embeddings`, batches of {LANGCHAIN_BATCH}",
    }
    table = [["HNSW index while loading", "rows", "way", "indexes on the table", "seconds", "rows/s", "ours ÷ this"]]
    for hnsw, count, label in (("absent", rows, "absent (empty table)"),
                               ("present", extra, f"present, holding {rows:,} rows")):
        for way in ("ours", "ours without statistics", "raw", "raw statistics per doc", "raw per doc",
                    "raw chunks only", "raw no full text", "langchain",
                    "langchain per doc"):
            if (way, hnsw) not in results:
                continue
            seconds, done = results[way, hnsw], counts.get((way, hnsw), count)
            ratio = (seconds / done) / (results["ours", hnsw] / count)  # per-row times: row counts may differ
            table.append([
                label, f"{done:,}", names[way, hnsw], indexes[way, hnsw], f"{seconds:.1f}", f"{done / seconds:,.0f}",
                "—" if way == "ours" else f"{ratio:.2f}×",
            ])
    for way, what in (("ours", "the space's partition"), ("langchain", "langchain_pg_embedding")):
        if way in builds:
            table.append(["built after the load", f"{rows:,}", f"CREATE INDEX … USING hnsw on `{what}`", "",
                          f"{builds[way]:.1f}", f"{rows / builds[way]:,.0f}", ""])
    with_index = results["ours", "present"] / extra
    settings_line = (
        f"{rows:,} chunks of {words:.0f} words on average (SciFact sentences), 384-d float32 clustered unit vectors, "
        f"per-document JSON metadata; {per_document} chunks per document ({rows // per_document:,} documents); each "
        f"way in {SLICES} slices ({SLICES // 2} with the index present) taking turns with the others in rotating "
        "order, a CHECKPOINT before each part, autovacuum off on the tables; HNSW m=16, "
        f"ef_construction=64 (cosine); CREATE INDEX with maintenance_work_mem={maintenance_work_mem_mb()}MB, "
        f"max_parallel_maintenance_workers={parallel_workers()}; DEBUG=false; server: {server_settings()}; "
        f"load average when the run started: {load_at_start:.1f} (the cores are shared)."
    )
    notes = (
        "Indexes: *btree* counts the primary keys and the foreign-key indexes. The app's `documents_chunk` holds the "
        "text: a GIN index on the generated tsvector column (heading + text, English), and two deferred foreign "
        "keys, checked for every row at commit; the vectors are in the embedding space's partition of "
        "`documents_chunkvector` (primary key, collection index, the cosine HNSW index on "
        "`(embedding::vector(384))`, a foreign key to the chunk). The raw tables of the first part are "
        "`LIKE documents_chunk INCLUDING ALL` and `LIKE` the partition: the same generated column and indexes, no "
        "foreign keys and no triggers (the statistics of the raw ways are their own set-based statements, see "
        "`RAW_STATISTICS`). langchain-postgres's own table has a JSONB metadata column "
        "with a GIN index and no full-text column; its 'present' index is `USING hnsw (embedding vector_cosine_ops)` "
        f"with the same parameters. With the index present a row costs ours {1000 * with_index:.2f} ms "
        f"({1000 * (with_index - results['ours', 'absent'] / rows):.2f} ms more than without it); building the "
        f"index after the load costs {1000 * builds['ours'] / rows:.2f} ms per row."
    )
    title = (f"Storing {rows:,} chunks: ours vs. raw COPY of the same searchable state vs. langchain-postgres "
             "(bench/ingest_store.py)")
    if args.label:
        title += f", {args.label}"
    if args.quick:
        print("\n".join(" | ".join(row) for row in table), "\n(--quick: not recorded in BENCHMARKS.md)")
    else:
        _common.record(title, settings_line, table, notes)
    nan = float("nan")
    figures = {
        "ours_vs_raw_copy": results["raw", "absent"] / results["ours", "absent"],
        "ours_vs_langchain": results.get(("langchain", "absent"), nan) / results["ours", "absent"],
        "without_statistics_vs_langchain": (results.get(("langchain", "absent"), nan) / rows)
        / (results["ours without statistics", "absent"] / counts["ours without statistics", "absent"]),
        "ours_vs_langchain_per_doc": (results.get(("langchain per doc", "absent"), nan)
                                      / counts.get(("langchain per doc", "absent"), 1))
        / (results["ours", "absent"] / rows),
        "rows_per_s": rows / results["ours", "absent"],
        "ours_vs_raw_copy_per_doc_tx": (results["raw per doc", "absent"] / counts["raw per doc", "absent"])
        / (results["ours", "absent"] / rows),
        "ours_vs_raw_copy_statistics_per_doc": results["raw statistics per doc", "absent"] / results["ours", "absent"],
        "ours_vs_raw_copy_chunks_only": (results["raw chunks only", "absent"] / counts["raw chunks only", "absent"])
        / (results["ours", "absent"] / rows),
        "ours_vs_raw_copy_no_full_text": (results["raw no full text", "absent"] / counts["raw no full text", "absent"])
        / (results["ours", "absent"] / rows),
        "ours_vs_raw_copy_with_hnsw": results["raw", "present"] / results["ours", "present"],
        "ours_vs_langchain_with_hnsw": results.get(("langchain", "present"), nan) / results["ours", "present"],
        "rows_per_s_with_hnsw": extra / results["ours", "present"],
        "hnsw_build_s": builds["ours"],
    }
    figures = {key: value for key, value in figures.items() if value == value}  # not the ways skipped (NaN)
    print(" ".join(f"{key}={value:.0f}" if key.startswith("rows") else
                   f"{key}={value:.1f}" if key.endswith("_s") else f"{key}={value:.2f}"
                   for key, value in figures.items()))


def server_settings() -> str:
    names = ("shared_buffers", "synchronous_commit", "max_wal_size")
    return ", ".join(f"{name}={execute(f'SHOW {name}')[0][0]}" for name in names)


if __name__ == "__main__":
    main()
