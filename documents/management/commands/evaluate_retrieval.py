import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.http import parse_id
from documents import search as retrieval
from documents.models import Collection, Document
from documents.search import evaluation


class Command(BaseCommand):
    help = "Measure retrieval quality of a collection on labelled queries: nDCG@10, recall@100, MRR."

    def add_arguments(self, parser):
        parser.add_argument("--collection", required=True, help="Collection name (or id).")
        parser.add_argument("--queries", required=True, type=Path, help="queries.jsonl (_id, text)")
        parser.add_argument("--qrels", required=True, type=Path, help="qrels.tsv (query-id, corpus-id, score)")
        parser.add_argument("--mode", choices=retrieval.MODES, default="hybrid")
        parser.add_argument("--k", type=int, default=10, help="Cut-off of nDCG (default 10).")
        parser.add_argument("--depth", type=int, default=100, help="Documents ranked per query (recall@depth).")
        parser.add_argument("--limit", type=int, default=0, help="Evaluate only the first N judged queries.")
        parser.add_argument(
            "--candidates", type=int, default=0,
            help="Candidates per arm, and passages asked for (default 3 × depth). The chat's own search is "
            "RETRIEVAL_CANDIDATES per arm; with fewer passages than depth × 3, recall@depth counts what they reach.",
        )

    def handle(self, *args, collection, queries, qrels, mode, k, depth, limit, candidates, **options):
        target = Collection.objects.filter(name=collection).first()
        if target is None and (collection_id := parse_id(collection)) is not None:
            target = Collection.objects.filter(pk=collection_id).first()
        if target is None:
            raise CommandError(f"No collection named {collection!r}.")
        texts = evaluation.load_queries(queries)
        judgments = evaluation.load_qrels(qrels)
        ids = [qid for qid in texts if qid in judgments]
        if limit:
            ids = ids[:limit]
        if not ids:
            raise CommandError("No query has relevance judgments.")
        external = dict(Document.objects.filter(collection=target).values_list("pk", "external_id"))
        filters = retrieval.Filters(collections=(target.pk,))
        ndcg = recall = mrr = 0.0
        started = time.perf_counter()
        for qid in ids:
            # Several chunks may come from one document: ask for enough to rank `depth` documents.
            asked = candidates or depth * 3
            hits = retrieval.search(user=target.owner, query=texts[qid], k=asked, filters=filters, mode=mode,
                                    candidates=asked)
            ranked = evaluation.documents_by_best_chunk([external.get(h.document_id, "") for h in hits])
            relevant = judgments[qid]
            ndcg += evaluation.ndcg_at(ranked, relevant, k)
            recall += evaluation.recall_at(ranked, relevant, depth)
            mrr += evaluation.reciprocal_rank(ranked, relevant)
        n = len(ids)
        elapsed = time.perf_counter() - started
        self.stdout.write(f"collection={target.name} mode={mode} queries={n} documents={len(external)} "
                          f"candidates={candidates or depth * 3} seconds={elapsed:.1f} "
                          f"ms_per_query={1000 * elapsed / n:.1f}")
        self.stdout.write(f"MRR@{depth}={mrr / n:.4f}")
        self.stdout.write(f"nDCG@{k}={ndcg / n:.4f} recall@{depth}={recall / n:.4f}")
