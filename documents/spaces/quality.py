"""Is the target space good enough to switch to, and how far did the vectors move? (issue 14, items 3 and 5)

``evaluate`` compares a collection's active space with the target space of its open migration on one query set,
each query embedded by each space's own backend and searched in that space alone (only vectors of one space are
ever compared; the vector arm is what changes between spaces, the keyword arm does not):

- labelled queries when given (BEIR layout, read as ``evaluate_retrieval`` reads them): nDCG@10 and recall@100
  per space, documents ranked by their best chunk (documents.search.evaluation);
- always: a sample of the collection's own recent questions (the chat's user messages in conversations scoped to
  it or citing its chunks) and synthetic queries cut from random chunks (a sentence's first words). overlap@10
  between the spaces on every query; recall@10: the share of synthetic queries whose source chunk is in the
  target's top 10;
- the HNSW recall of the target's index against an exact scan of the same space (mean, p10, minimum).

The result is stored on the migration (``SpaceMigration.evaluation``) for the switch's gate
(documents.spaces.migration.gate_reason), with the drift (``drift``) beside it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
from django.apps import apps
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from documents.db import vector_cursor
from documents.models import Chunk, ChunkVector, Collection, EmbeddingSpace, SpaceMigration
from documents.search import evaluation as metrics
from documents.spaces import backend_for, storage
from documents.spaces.migration import coverage as vectors_and_chunks
from documents.spaces.migration import open_migration
from documents.spaces.vectors import search_space

TOP = 10  # overlap@10, recall@10, HNSW recall@10
LABELLED_DEPTH = 100  # recall@100
SYNTHETIC_WORDS = 12  # a synthetic query: the first words of one of a chunk's sentences
DRIFT_SAMPLE = 1000  # chunks whose two vectors are compared for a same-model drift
# The figures of an evaluation, as `manage.py embedding_spaces evaluate` prints them (evaluate() stores more).
FIGURES = (
    "overlap_at_10", "recall_at_10", "ndcg_at_10_active", "ndcg_at_10_target", "recall_at_100_active",
    "recall_at_100_target", "hnsw_recall_mean", "hnsw_recall_p10", "hnsw_recall_min", "queries", "labelled",
    "coverage",
)

VECTORS = connection.ops.quote_name(ChunkVector._meta.db_table)


class EvaluationError(ValueError):
    """Nothing to evaluate, or the query files are unusable: the message says which."""


def evaluate(
    *,
    collection: Collection,
    queries: dict[str, str] | None = None,
    qrels: dict[str, set[str]] | None = None,
    sample: int = 50,
) -> dict[str, Any]:
    """Compare the active and target spaces of ``collection``'s open migration; stored on the migration.

    ``queries`` (id → text) and ``qrels`` (id → relevant documents' external ids) come together or not at all
    (documents.search.evaluation.load_queries / load_qrels). ``sample``: how many recent questions and how many
    synthetic queries (each) are drawn.
    """
    migration = open_migration(collection)
    if migration is None:
        raise EvaluationError(
            f"Collection {collection.name!r} has no migration in progress: start one (migrate) before evaluating."
        )
    if (queries is None) != (qrels is None):
        raise EvaluationError("Give both the queries and their relevance judgments (qrels), or neither.")
    if sample < 1:
        raise EvaluationError("The sample must hold at least one query.")
    active, target = migration.source, migration.target  # the source is the active space until the switch
    distance = collection.distance
    judged = [(qid, text) for qid, text in (queries or {}).items() if qid in (qrels or {})]
    if queries is not None and not judged:
        raise EvaluationError("No query has relevance judgments: check that the qrels name the queries' ids.")

    synthetic = synthetic_queries(collection=collection, spaces=(active, target), sample=sample)
    questions = recent_questions(collection=collection, limit=sample)
    texts = [text for _, text in judged] + questions + [text for _, text in synthetic]
    if not texts:
        raise EvaluationError(f"Collection {collection.name!r} has no chunk in both spaces yet: nothing to ask.")
    depth = LABELLED_DEPTH * 3 if judged else TOP  # several chunks per document: enough to rank 100 documents
    ranked = {
        space.pk: _search_all(space=space, distance=distance, texts=texts, k=depth, collection=collection)
        for space in (active, target)
    }
    top_active = [ids[:TOP] for ids in ranked[active.pk]]
    top_target = [ids[:TOP] for ids in ranked[target.pk]]

    overlap = [len(set(a) & set(t)) / TOP for a, t in zip(top_active, top_target, strict=True)]
    offset = len(judged) + len(questions)
    found_target = [chunk_id in top_target[offset + i] for i, (chunk_id, _) in enumerate(synthetic)]
    found_active = [chunk_id in top_active[offset + i] for i, (chunk_id, _) in enumerate(synthetic)]
    hnsw = _hnsw_recall(target=target, distance=distance, texts=texts, approximate=top_target, collection=collection)

    result: dict[str, Any] = {
        "overlap_at_10": _mean(overlap),
        "recall_at_10": _mean(found_target),
        "recall_at_10_active": _mean(found_active),
        "ndcg_at_10_active": None,
        "ndcg_at_10_target": None,
        "recall_at_100_active": None,
        "recall_at_100_target": None,
        **hnsw,
        "queries": len(texts),
        "labelled_queries": len(judged),
        "recent_questions": len(questions),
        "synthetic_queries": len(synthetic),
        "labelled": bool(judged),
        "coverage": coverage(collection=collection, space=target),
        "active_space": active.name,
        "target_space": target.name,
        "evaluated_at": timezone.now().isoformat(),
    }
    if judged:
        assert qrels is not None
        for space, key in ((active, "active"), (target, "target")):
            documents = _documents_of(ranked[space.pk][: len(judged)])
            relevant = [qrels[qid] for qid, _ in judged]
            result[f"ndcg_at_10_{key}"] = _mean(
                metrics.ndcg_at(docs, rel, TOP) for docs, rel in zip(documents, relevant, strict=True)
            )
            result[f"recall_at_100_{key}"] = _mean(
                metrics.recall_at(docs, rel, LABELLED_DEPTH) for docs, rel in zip(documents, relevant, strict=True)
            )
    # update(), not save(): the backfill task writes the same row's cursor meanwhile.
    SpaceMigration.objects.filter(pk=migration.pk).update(evaluation=result, updated_at=timezone.now())
    migration.evaluation = result
    drift(migration=migration)
    return result


def drift(*, migration: SpaceMigration, sample: int = DRIFT_SAMPLE) -> dict[str, Any]:
    """How far the collection's vectors moved between the migration's source and target; stored on it.

    The same model (same backend, model and dimensions: a new runtime, a quantisation): cosine(old, new) of each
    chunk's two vectors over a sample, p1 / p50 / mean / min. A new model: its vectors are not comparable, so
    the drift is what the evaluation saw: overlap@10, recall@10, and the change of nDCG@10 and recall@100
    (target − active) when it was labelled.
    """
    source, target = migration.source, migration.target
    same_model = (source.backend, source.model, source.dimensions) == (target.backend, target.model, target.dimensions)
    evaluated = migration.evaluation or {}
    result: dict[str, Any] = {
        "kind": "same_model" if same_model else "new_model",
        "overlap_at_10": evaluated.get("overlap_at_10"),
        "recall_at_10": evaluated.get("recall_at_10"),
        "ndcg_at_10_change": _change(evaluated, "ndcg_at_10"),
        "recall_at_100_change": _change(evaluated, "recall_at_100"),
        "measured_at": timezone.now().isoformat(),
    }
    if same_model:
        cosines = _pair_cosines(migration=migration, sample=sample)
        result.update(
            chunks=len(cosines),
            cosine_p1=_round(np.percentile(cosines, 1)) if cosines else None,
            cosine_p50=_round(np.percentile(cosines, 50)) if cosines else None,
            cosine_mean=_round(np.mean(cosines)) if cosines else None,
            cosine_min=_round(min(cosines)) if cosines else None,
        )
    SpaceMigration.objects.filter(pk=migration.pk).update(drift=result, updated_at=timezone.now())
    migration.drift = result
    return result


def coverage(*, collection: Collection, space: EmbeddingSpace) -> float:
    """The share of the collection's chunks with a vector in ``space`` (1.0 for an empty collection), as the
    switch counts them (documents.spaces.migration.coverage)."""
    done, total = vectors_and_chunks(collection, space)
    return 1.0 if not total else round(min(done / total, 1.0), 4)


def synthetic_queries(
    *, collection: Collection, spaces: Iterable[EmbeddingSpace], sample: int
) -> list[tuple[int, str]]:
    """(chunk id, query) for up to ``sample`` random chunks with a vector in every one of ``spaces``.

    The query is the first words of one of the chunk's sentences, picked at random: a question the chunk
    answers in its own words, so that a good space finds it. Seeded by the collection: the same chunks and
    queries each time, so two evaluations of a migration compare.
    """
    spaces = list(spaces)
    joins = " ".join(
        f"JOIN {VECTORS} v{i} ON v{i}.chunk_id = v0.chunk_id AND v{i}.space_id = {int(space.pk)}"
        for i, space in enumerate(spaces[1:], start=1)
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT v0.chunk_id FROM {VECTORS} v0 {joins} "
            f"WHERE v0.space_id = {int(spaces[0].pk)} AND v0.collection_id = %s ORDER BY v0.chunk_id",
            [collection.pk],
        )
        ids = [row[0] for row in cursor.fetchall()]
    draw = random.Random(collection.pk)
    chosen = draw.sample(ids, min(len(ids), sample * 2))  # some chunks are too short to ask about
    texts = dict(Chunk.objects.filter(pk__in=chosen).values_list("pk", "text"))
    queries = []
    for chunk_id in chosen:
        query = synthetic_query(texts.get(chunk_id, ""), draw)
        if query:
            queries.append((chunk_id, query))
        if len(queries) == sample:
            break
    return queries


def synthetic_query(text: str, draw: random.Random) -> str:
    """The first SYNTHETIC_WORDS words of a random sentence of ``text`` (of at least five words), or ''."""
    sentences = [s.split() for s in re.split(r"(?<=[.!?])\s+", text)]
    long_enough = [words for words in sentences if len(words) >= 5]
    if not long_enough:
        words = text.split()
        return " ".join(words[:SYNTHETIC_WORDS]) if len(words) >= 3 else ""
    return " ".join(draw.choice(long_enough)[:SYNTHETIC_WORDS])


def recent_questions(*, collection: Collection, limit: int) -> list[str]:
    """Up to ``limit`` distinct recent questions asked of the collection, newest first.

    The chat's user messages, in conversations scoped to the collection or whose answers cited its chunks. The
    chat app sits above documents (imports flow chat → documents), so its models are looked up by name, and
    an installation without it simply has no questions.
    """
    if not apps.is_installed("chat"):
        return []
    message, citation = apps.get_model("chat", "Message"), apps.get_model("chat", "Citation")
    cited = citation.objects.filter(chunk__collection=collection).values("message__conversation_id")
    asked = (
        message.objects.filter(role="user")
        .filter(Q(conversation__collection=collection) | Q(conversation_id__in=cited))
        .order_by("-created_at", "-id")
        .values_list("content", flat=True)
    )
    questions: list[str] = []
    for content in asked[: limit * 4].iterator():
        text = " ".join(content.split())[:2000]
        if text and text not in questions:
            questions.append(text)
        if len(questions) == limit:
            break
    return questions


def _search_all(
    *, space: EmbeddingSpace, distance: str, texts: list[str], k: int, collection: Collection, exact: bool = False
) -> list[list[int]]:
    backend = backend_for(space)
    results = []
    for text in texts:
        vector = np.asarray(backend.embed_query(text), dtype=np.float32)
        found = search_space(
            space=space, distance=distance, vector=vector, k=k, collection_ids=[collection.pk], exact=exact
        )
        results.append([chunk_id for chunk_id, _ in found])
    return results


def _hnsw_recall(
    *, target: EmbeddingSpace, distance: str, texts: list[str], approximate: list[list[int]], collection: Collection
) -> dict[str, float | None]:
    """Recall@10 of the target's HNSW index against an exact scan of the same space, per query.

    None while the index is not built (before the backfill ends there is nothing approximate to measure).
    """
    empty: dict[str, float | None] = {"hnsw_recall_mean": None, "hnsw_recall_p10": None, "hnsw_recall_min": None}
    if not _index_exists(target, distance):
        return empty
    exact = _search_all(space=target, distance=distance, texts=texts, k=TOP, collection=collection, exact=True)
    recalls = [len(set(a) & set(e)) / len(e) for a, e in zip(approximate, exact, strict=True) if e]
    if not recalls:
        return empty
    return {
        "hnsw_recall_mean": _mean(recalls),
        "hnsw_recall_p10": _round(np.percentile(recalls, 10)),
        "hnsw_recall_min": _round(min(recalls)),
    }


def _index_exists(space: EmbeddingSpace, distance: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [storage.index_name(space, distance)])
        return cursor.fetchone()[0]


def _documents_of(rankings: list[list[int]]) -> list[list[str]]:
    """Chunk rankings → their documents' external ids, ranked by best chunk (as evaluate_retrieval ranks them)."""
    ids = {chunk_id for ranking in rankings for chunk_id in ranking}
    external = dict(Chunk.objects.filter(pk__in=ids).values_list("pk", "document__external_id"))
    return [metrics.documents_by_best_chunk([external.get(c, "") for c in ranking]) for ranking in rankings]


def _pair_cosines(*, migration: SpaceMigration, sample: int) -> list[float]:
    """cosine(old, new) of up to ``sample`` chunks (seeded) with a vector in both of the migration's spaces."""
    source, target = migration.source, migration.target
    chosen = _sampled_pairs(migration, sample)
    if not chosen:
        return []
    with vector_cursor() as cursor:
        cursor.execute(
            f"SELECT 1 - (a.embedding <=> b.embedding) FROM {VECTORS} a JOIN {VECTORS} b "
            f"ON b.chunk_id = a.chunk_id AND b.space_id = {int(target.pk)} "
            f"WHERE a.space_id = {int(source.pk)} AND a.chunk_id = ANY(%s)",
            [chosen],
        )
        return [float(row[0]) for row in cursor.fetchall()]


def _sampled_pairs(migration: SpaceMigration, sample: int) -> list[int]:
    """Up to ``sample`` ids (seeded by the migration) of the collection's chunks with a vector in both spaces."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT a.chunk_id FROM {VECTORS} a JOIN {VECTORS} b ON b.chunk_id = a.chunk_id "
            f"AND b.space_id = {int(migration.target_id)} "
            f"WHERE a.space_id = {int(migration.source_id)} AND a.collection_id = %s ORDER BY a.chunk_id",
            [migration.collection_id],
        )
        ids = [row[0] for row in cursor.fetchall()]
    return random.Random(migration.pk).sample(ids, min(len(ids), sample))


def _change(evaluated: dict[str, Any], metric: str) -> float | None:
    before, after = evaluated.get(f"{metric}_active"), evaluated.get(f"{metric}_target")
    return None if before is None or after is None else _round(after - before)


def _mean(values: Iterable[float | bool]) -> float | None:
    values = [float(value) for value in values]
    return _round(sum(values) / len(values)) if values else None


def _round(value: float | np.floating[Any]) -> float:
    return round(float(value), 4)
