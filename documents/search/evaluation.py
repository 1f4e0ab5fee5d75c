"""Retrieval quality on labelled queries (BEIR layout): nDCG@10, recall@100, MRR."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path


def load_queries(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8") as lines:
        return {str(row["_id"]): row["text"] for row in map(json.loads, filter(str.strip, lines))}


def load_qrels(path: Path) -> dict[str, set[str]]:
    """query id → relevant corpus ids (score > 0); a header line is skipped."""
    qrels: dict[str, set[str]] = {}
    with path.open(encoding="utf-8") as handle:
        for row in csv.reader(handle, delimiter="\t"):
            if len(row) < 3 or not re.fullmatch(r"-?[0-9]+", row[2].strip()):
                continue
            if int(row[2]) > 0:
                qrels.setdefault(row[0], set()).add(row[1])
    return qrels


def ndcg_at(ranked: list[str], relevant: set[str], k: int = 10) -> float:
    dcg = sum(1.0 / math.log2(i + 2) for i, doc in enumerate(ranked[:k]) if doc in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal if ideal else 0.0


def recall_at(ranked: list[str], relevant: set[str], k: int = 100) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


def reciprocal_rank(ranked: list[str], relevant: set[str]) -> float:
    for i, doc in enumerate(ranked):
        if doc in relevant:
            return 1.0 / (i + 1)
    return 0.0


def documents_by_best_chunk(external_ids: list[str]) -> list[str]:
    """Chunk results (best first) → documents ranked by their best chunk."""
    seen: dict[str, None] = {}
    for external_id in external_ids:
        seen.setdefault(external_id, None)
    return list(seen)
