"""Chunk size in the embedding model's own tokens: retrieval quality and ingestion speed on SciFact dev.

    python bench/chunk_size.py [--sizes 128,192,254] [--queries 300] [--docs 1500] [--quick]

The same documents are chunked (documents/chunking.py) at each size, with an overlap of 15 %, and
embedded by the local model (documents/embeddings/local.py, its defaults, ``EMBEDDING_THREADS`` = all
cores) in one process; the judged queries are embedded once. Each document is ranked by its best
chunk (as ``evaluate_retrieval`` does) by cosine over all chunks of the sample, and nDCG@10 and
recall@100 are computed with ``documents.search.evaluation``. Vector search only: the keyword arm does not
depend on where chunks end, and embedding the whole corpus once per size through the pipeline takes
hours on a shared 2-core machine. The sample: every document judged relevant to the evaluated
queries, then an evenly spread sample of the others up to ``--docs``; the figures compare sizes,
they are not the full-corpus nDCG (``bench/retrieval_quality.py`` gives that). Embedding speed is
chunks/s and documents/s of the embedding alone (chunking times are given beside it). Appends one
table to bench/BENCHMARKS.md and ends with a line of key=value figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128,192,254")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--docs", type=int, default=1500)
    parser.add_argument("--quick", action="store_true", help="5 queries, 20 documents: not recorded (CI)")
    args = parser.parse_args()
    if args.quick:
        args.queries, args.docs = 5, 20
    scifact = _common.require_shared("data/scifact")
    _common.setup_django("ragbench_chunk_size", LOG_LEVEL="WARNING")
    import numpy as np
    from django.conf import settings

    from documents import embeddings
    from documents.chunking import chunk_sections
    from documents.parsing import Section
    from documents.search import evaluation

    queries = evaluation.load_queries(scifact / "queries-dev.jsonl")
    judgments = evaluation.load_qrels(scifact / "qrels-dev.tsv")
    ids = [qid for qid in queries if qid in judgments][: args.queries]
    corpus = {}
    with (scifact / "corpus.jsonl").open() as handle:
        for line in handle:
            row = json.loads(line)
            corpus[row["_id"]] = (row["title"], row["text"])
    relevant = {doc for qid in ids for doc in judgments[qid] if doc in corpus}
    others = [doc for doc in corpus if doc not in relevant]
    wanted = max(0, args.docs - len(relevant))  # every judged document stays, whatever --docs says
    sample = sorted(relevant) + [others[i * len(others) // wanted] for i in range(wanted)]

    backend = embeddings.LocalModelBackend(dimensions=384, batch_tokens=settings.EMBEDDING_BATCH_TOKENS,
                                           threads=settings.EMBEDDING_THREADS)
    questions = backend.embed_documents([queries[qid] for qid in ids])
    rows = [["chunk size (overlap)", "chunks", "chunks/doc", "mean word pieces", "nDCG@10", "recall@100",
             "chunking s", "embedding chunks/s", "documents/s"]]
    figures = {}
    for size in [int(value) for value in args.sizes.split(",")]:
        overlap = round(size * 0.15)
        started = time.perf_counter()
        owners, texts, lengths = [], [], []
        for doc in sample:
            title, text = corpus[doc]
            # As import_beir stores an abstract: the title is the document's heading.
            for draft in chunk_sections([Section(text=text, heading_path=(title,))], chunk_size=size,
                                        chunk_overlap=overlap):
                owners.append(doc)
                texts.append(draft.embedding_text)
                lengths.append(draft.token_count)
        chunking = time.perf_counter() - started
        started = time.perf_counter()
        vectors = embeddings.embed_in_batches(backend, texts, batch_size=settings.EMBEDDING_BATCH_SIZE)
        embedding = time.perf_counter() - started
        owners_array = np.array(owners)
        ndcg = recall = 0.0
        for row, qid in enumerate(ids):
            order = np.argsort(-(vectors @ questions[row]), kind="stable")
            ranked = evaluation.documents_by_best_chunk(owners_array[order].tolist())
            ndcg += evaluation.ndcg_at(ranked, judgments[qid], 10)
            recall += evaluation.recall_at(ranked, judgments[qid], 100)
        ndcg, recall = ndcg / len(ids), recall / len(ids)
        figures[size] = (ndcg, len(texts) / embedding, len(sample) / embedding)
        rows.append([f"{size} ({overlap})", str(len(texts)), f"{len(texts) / len(sample):.2f}",
                     f"{sum(lengths) / len(lengths):.0f}", f"{ndcg:.4f}", f"{recall:.4f}", f"{chunking:.1f}",
                     f"{len(texts) / embedding:.1f}", f"{len(sample) / embedding:.2f}"])
        print(" | ".join(rows[-1]), flush=True)
    _common.report(
        args.quick, "Chunk size in model tokens: SciFact dev, vector search (bench/chunk_size.py)",
        f"{len(ids)} judged queries over {len(sample)} abstracts ({len(relevant)} judged relevant + an even sample "
        f"of the rest); title as the heading path; all-MiniLM-L6-v2 int8 (local backend, EMBEDDING_BATCH_TOKENS="
        f"{settings.EMBEDDING_BATCH_TOKENS}, EMBEDDING_THREADS={settings.EMBEDDING_THREADS or 'all cores'}); "
        "documents ranked by their best chunk",
        rows,
    )
    print(" ".join(f"size_{size}_ndcg={ndcg:.4f} size_{size}_chunks_per_s={speed:.1f} size_{size}_docs_per_s={docs:.2f}"
                   for size, (ndcg, speed, docs) in figures.items()))


if __name__ == "__main__":
    main()
