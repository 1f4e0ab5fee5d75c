"""Retrieval quality on BEIR SciFact (dev split): vector, keyword and hybrid, as users get them.

    python bench/retrieval_quality.py [--limit N] [--quick]

Imports ``$RAG_SHARED_DIR/data/scifact/corpus.jsonl`` with ``import_beir`` (through the normal
pipeline, embedded by the offline all-MiniLM-L6-v2 model) into its own database, then runs
``evaluate_retrieval`` in the three modes and appends the table to bench/BENCHMARKS.md.
A second run reuses the import. References on this split: BM25 nDCG@10 0.696 (bm25s, exact).
``--quick`` (CI): the first 10 judged queries over their relevant abstracts and 30 others, in a database
of its own; the table is printed, not recorded. Keyword and hybrid also run with the keyword statement as
it was before issue 17 goal 2, and hybrid as the chat searches with it as it was until 2026-12-02
(bench/_keyword_before.py), in the same run. ``--embeddings hashing`` imports
with the hashing backend instead (its own database, minutes instead of an hour on a busy 2-core machine):
BM25's figures do not depend on the embeddings, the vector and hybrid ones then mean little.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

QUICK_QUERIES, QUICK_OTHERS = 10, 30


def quick_corpus(scifact: Path) -> Path:
    """The first judged queries' relevant abstracts and an even sample of the others, as a corpus file."""
    judged: dict[str, set[str]] = {}
    with (scifact / "qrels-dev.tsv").open(encoding="utf-8") as handle:
        for row in csv.reader(handle, delimiter="\t"):
            if len(row) >= 3 and row[2].strip().isdigit() and int(row[2]) > 0:
                judged.setdefault(row[0], set()).add(row[1])
    with (scifact / "queries-dev.jsonl").open(encoding="utf-8") as handle:
        ids = [str(row["_id"]) for row in map(json.loads, filter(str.strip, handle)) if str(row["_id"]) in judged]
    relevant = {doc for qid in ids[:QUICK_QUERIES] for doc in judged[qid]}
    with (scifact / "corpus.jsonl").open(encoding="utf-8") as handle:
        lines = [line for line in handle if line.strip()]
    chosen = [line for line in lines if json.loads(line)["_id"] in relevant]
    chosen += lines[:: len(lines) // QUICK_OTHERS][:QUICK_OTHERS]
    path = _common.ROOT / "var" / "bench-retrieval-quality-quick.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(dict.fromkeys(chosen)), encoding="utf-8")
    return path


# The keyword statements measured besides today's (bench/_keyword_before.py).
STATEMENTS = {
    "before": "keyword statement before issue 17 goal 2",
    "until": "keyword statement until 2026-12-02 (a common word ORed past the candidates' bound)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N judged queries")
    parser.add_argument("--quick", action="store_true", help="10 queries over ~40 abstracts: not recorded (CI)")
    parser.add_argument("--label", default="", help="added to the title in BENCHMARKS.md (e.g. 'after ...')")
    parser.add_argument("--embeddings", choices=["local", "hashing"], default="local",
                        help="the backend that embeds the corpus (hashing: keyword figures only)")
    args = parser.parse_args()
    scifact = _common.require_shared("data/scifact")
    corpus = scifact / "corpus.jsonl"
    if args.quick:
        args.limit, corpus = QUICK_QUERIES, quick_corpus(scifact)
    database = "ragbench_scifact_quick" if args.quick else "ragbench_scifact"
    _common.setup_django(
        database if args.embeddings == "local" else f"{database}_{args.embeddings}", EMBEDDING_BACKEND=args.embeddings,
        LOG_LEVEL="WARNING",
    )
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    user, _ = get_user_model().objects.get_or_create(username="bench")
    started = time.perf_counter()
    out = io.StringIO()
    call_command("import_beir", str(corpus), collection="scifact", owner="bench", mode="inline",
                 stdout=out)
    print(out.getvalue().strip(), f"({time.perf_counter() - started:.0f} s)")
    rows = [["mode", "nDCG@10", "recall@100", "MRR", "ms/query"]]
    figures = {}
    from django.conf import settings

    # The three modes as evaluations usually rank (300 candidates per arm), then hybrid as the chat searches:
    # RETRIEVAL_CANDIDATES per arm, as many passages (nDCG@10 and recall over what those reach).
    runs = [("vector", 0, ""), ("keyword", 0, ""), ("hybrid", 0, ""), ("hybrid", settings.RETRIEVAL_CANDIDATES, ""),
            ("keyword", 0, "before"), ("hybrid", 0, "before"), ("hybrid", settings.RETRIEVAL_CANDIDATES, "before"),
            ("hybrid", settings.RETRIEVAL_CANDIDATES, "until")]
    import _keyword_before

    from documents.search import sql

    today = sql.keyword_statement
    for mode, candidates, statement in runs:
        sql.keyword_statement = {"": today, "before": _keyword_before.keyword_statement_before,
                                 "until": _keyword_before.keyword_statement_unbounded_or}[statement]
        out = io.StringIO()
        options = {"limit": args.limit} if args.limit else {}
        if candidates:
            options["candidates"] = candidates
        call_command("evaluate_retrieval", collection="scifact", queries=scifact / "queries-dev.jsonl",
                     qrels=scifact / "qrels-dev.tsv", mode=mode, stdout=out, **options)
        text = out.getvalue()
        print(text.strip())
        ndcg = float(re.search(r"nDCG@10=([\d.]+)", text).group(1))
        recall = float(re.search(r"recall@100=([\d.]+)", text).group(1))
        mrr = float(re.search(r"MRR@100=([\d.]+)", text).group(1))
        ms = float(re.search(r"ms_per_query=([\d.]+)", text).group(1))
        queries = int(re.search(r"queries=(\d+)", text).group(1))
        name = f"{mode}, as the chat searches ({candidates} candidates per arm)" if candidates else mode
        name = f"{name}, {STATEMENTS[statement]}" if statement else name
        figures["_".join(str(part) for part in (mode, candidates, statement) if part)] = ndcg
        rows.append([name, f"{ndcg:.4f}", f"{recall:.4f}", f"{mrr:.4f}", f"{ms:.1f}"])
    rows.append(["BM25 reference (bm25s, exact)", "0.696", "0.928", "", ""])
    rows.append(["all-MiniLM-L6-v2 reference (MTEB, test split)", "0.645", "", "", ""])

    sql.keyword_statement = today
    abstracts = sum(1 for line in corpus.open(encoding="utf-8") if line.strip())
    _common.report(
        # A hashing run must not pass for the model's in the goals summary (bench/_summary.py reads the title).
        args.quick, ("Retrieval quality: SciFact dev (bench/retrieval_quality.py)" if args.embeddings == "local" else
                     "Keyword retrieval quality, hashing embeddings: SciFact dev (bench/retrieval_quality.py "
                     "--embeddings hashing)") + (f", {args.label}" if args.label else ""),
        f"{queries} judged queries, {abstracts:,} abstracts; "
        f"{'all-MiniLM-L6-v2 int8 (offline)' if args.embeddings == 'local' else 'hashing embeddings (not a model)'}, "
        "chunks of "
        f"{settings.CHUNK_SIZE_TOKENS} tokens; keyword = BM25 (document frequencies kept by triggers); hybrid = "
        f"{settings.HYBRID_VECTOR_WEIGHT} × min-max normalised cosine + {1 - settings.HYBRID_VECTOR_WEIGHT} × min-max "
        "normalised BM25 over 300 candidates per arm (evaluate_retrieval asks 3 × 100); documents ranked by their "
        "best chunk.",
        rows,
    )
    print(" ".join(f"{mode}_ndcg_at_10={value:.4f}" for mode, value in figures.items()))


if __name__ == "__main__":
    main()
