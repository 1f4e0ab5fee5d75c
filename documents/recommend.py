"""Recommended for you: documents near what someone has been reading, among those they may read.

Their interest is a vector: the time-decayed mean of the vectors of the documents they recently opened or
were answered from (``Interest``), weights halving every HALF_LIFE_DAYS, in the embedding space most of those
documents' vectors are in (only vectors of one space are compared). Recommended are the readable
documents nearest it that are not in that history. Without a history (or without vectors in it) they get
what is popular in their collections lately (opened most by anyone), then the newest documents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from django.db import connection, transaction

from documents.db import vector_cursor
from documents.models import Document, Interest
from documents.search.sql import COLLECTION, DOCUMENT, SCOPE, _table, readable_collections
from documents.similar import ITERATIVE, MAX_K, VECTOR
from documents.spaces.document_index import document_expression

INTEREST = _table(Interest)
HALF_LIFE_DAYS = 14.0
HISTORY = 50  # the most recent documents that make the interest vector
WINDOW = timedelta(days=90)  # older signs are forgotten


@dataclass(frozen=True)
class Recommendation:
    document_id: int
    title: str
    collection: str
    score: float | None  # the cosine with the interest vector; None for a cold-start pick
    reason: str  # "interest", "popular" or "recent"


# A document opened again within this time is not noted again (paging through its passages, reloading).
REPEAT = timedelta(hours=1)


def interest_record(*, user: Any, document_ids: list[int], kind: str) -> None:
    """Note that ``user`` opened (or was answered from) these documents; forget their signs older than WINDOW.

    One statement: the insert skips a document noted in the last REPEAT, and the same statement prunes.
    """
    if not getattr(user, "is_authenticated", False) or not document_ids:
        return
    params: list[Any] = [user.pk, WINDOW, user.pk, kind, list(dict.fromkeys(document_ids)), user.pk, kind, REPEAT]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH pruned AS (DELETE FROM {INTEREST} WHERE user_id = %s AND created_at < now() - %s)
            INSERT INTO {INTEREST} (user_id, document_id, kind, created_at)
            SELECT %s, n.id, %s, now() FROM unnest(%s::bigint[]) AS n (id)
            WHERE NOT EXISTS (
                SELECT 1 FROM {INTEREST} i
                WHERE i.user_id = %s AND i.document_id = n.id AND i.kind = %s AND i.created_at > now() - %s
            )
            """,
            params,
        )


def interest_clear(*, user: Any) -> int:
    """Forget ``user``'s reading history; how many signs were deleted."""
    deleted, _ = Interest.objects.filter(user=user).delete()
    return deleted


def _scope_statement(user_id: int, k: int) -> tuple[str, list[Any]]:
    """The readable collections' ids as the transaction-local setting the ranking filters on (SCOPE, as search
    does: the planner sees them, so a reader of a small share of the documents gets the collection index and an
    exact sort instead of an HNSW scan walking on past many rows for each it keeps), and the iterative scan's
    settings: one statement, where the iterative scan's settings alone were one before."""
    readable, params = readable_collections(user_id)
    return (
        f"SELECT {ITERATIVE}, set_config('rag.collections', (SELECT coalesce(array_agg(g.id)::text, '{{}}') "
        f"FROM {COLLECTION} g WHERE g.id IN ({readable})), true)",
        [str(max(40, 2 * k)), *params],
    )


History = list[tuple[int, np.ndarray | None, int | None, float]]


def _history(cursor: Any, user_id: int) -> History:
    """(document, its vector, its vector's space, age in days) of the user's recent readable documents, newest
    first."""
    readable, params = readable_collections(user_id)
    cursor.execute(
        f"""
        SELECT h.document_id, v.embedding, v.space_id, extract(epoch FROM now() - h.at) / 86400
        FROM (
            SELECT i.document_id, max(i.created_at) AS at FROM {INTEREST} i
            WHERE i.user_id = %s AND i.created_at > now() - %s GROUP BY i.document_id
            ORDER BY at DESC LIMIT {HISTORY}
        ) h
        JOIN {DOCUMENT} d ON d.id = h.document_id AND d.collection_id IN ({readable})
        LEFT JOIN {VECTOR} v ON v.document_id = h.document_id
        ORDER BY h.at DESC
        """,
        [user_id, WINDOW, *params],
    )
    return [
        (pk, None if vector is None else np.asarray(vector.to_numpy()), space, float(age))
        for pk, vector, space, age in cursor.fetchall()
    ]


def interest_vector(history: History) -> tuple[np.ndarray, int] | None:
    """The time-decayed, normalised mean of the history's vectors, and their space; or None.

    A history may span embedding spaces (collections on different models, or a switch meanwhile): only vectors
    of one space can be averaged, so the space most of the history's documents are in is the interest's.
    """
    spaces = [space for _, vector, space, _ in history if vector is not None and space is not None]
    if not spaces:
        return None
    space = max(set(spaces), key=lambda s: (spaces.count(s), -spaces.index(s)))  # a tie: the newest read's
    rows = [(vector, age) for _, vector, s, age in history if vector is not None and s == space]
    weights = np.array([math.exp(-math.log(2) * age / HALF_LIFE_DAYS) for _, age in rows], dtype=np.float32)
    mean = (np.array([vector for vector, _ in rows], dtype=np.float32) * weights[:, None]).sum(axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm, space) if norm > 0 else None


def recommendations_for(*, user: Any, k: int = 5) -> list[Recommendation]:
    """Up to ``k`` documents ``user`` may read, nearest their recent interest; popular and new ones to start with."""
    k = max(1, min(k, MAX_K))
    found: list[Recommendation] = []
    with vector_cursor() as cursor:
        history = _history(cursor, user.pk)
        seen = [pk for pk, *_ in history]
        interest = interest_vector(history)
        if interest is not None:
            vector, space = interest
            dimensions = len(vector)
            params: list[Any] = [vector, seen, k]
            with transaction.atomic():  # the scope and the iterative scan's settings are transaction-local
                cursor.execute(*_scope_statement(user.pk, k))
                # The space's partial index: its predicate and expression as literals (documents.spaces.document_index).
                cursor.execute(
                    f"""
                    WITH nearest AS MATERIALIZED (
                        SELECT v.document_id,
                            {document_expression(dimensions, "v.embedding")} <=> %s::vector({dimensions}) AS gap
                        FROM {VECTOR} v
                        WHERE v.space_id = {int(space)} AND v.collection_id = ANY({SCOPE})
                          AND NOT v.document_id = ANY(%s)
                        ORDER BY gap LIMIT %s
                    )
                    SELECT n.document_id, d.title, g.name, 1 - n.gap
                    FROM nearest n JOIN {DOCUMENT} d ON d.id = n.document_id
                    JOIN {COLLECTION} g ON g.id = d.collection_id
                    ORDER BY n.gap + 0, n.document_id
                    """,
                    params,
                )
                found = [Recommendation(pk, title, name, float(score), "interest") for pk, title, name, score in cursor]
        if len(found) < k:
            found += _cold_start(cursor, user.pk, k - len(found), exclude=seen + [r.document_id for r in found])
    return found


def _cold_start(cursor: Any, user_id: int, k: int, *, exclude: list[int]) -> list[Recommendation]:
    """Popular lately (opened by the most people) in the readable collections, then the newest ready documents."""
    readable, params = readable_collections(user_id)
    cursor.execute(
        f"""
        (SELECT d.id, d.title, g.name, 'popular', count(DISTINCT i.user_id) AS people, d.created_at
         FROM {INTEREST} i JOIN {DOCUMENT} d ON d.id = i.document_id JOIN {COLLECTION} g ON g.id = d.collection_id
         WHERE d.collection_id IN ({readable}) AND i.created_at > now() - %s AND i.kind = %s
           AND d.status = %s AND NOT d.id = ANY(%s)
         GROUP BY d.id, g.name ORDER BY people DESC, d.created_at DESC LIMIT %s)
        UNION ALL
        (SELECT d.id, d.title, g.name, 'recent', 0, d.created_at
         FROM {DOCUMENT} d JOIN {COLLECTION} g ON g.id = d.collection_id
         WHERE d.collection_id IN ({readable}) AND d.status = %s AND NOT d.id = ANY(%s)
         ORDER BY d.created_at DESC, d.id DESC LIMIT %s)
        """,
        [
            *params,
            WINDOW,
            Interest.Kind.OPENED,
            Document.Status.READY,
            exclude,
            k,
            *params,
            Document.Status.READY,
            exclude,
            k,
        ],
    )
    picked: dict[int, Recommendation] = {}
    for pk, title, name, reason, _people, _created in cursor.fetchall():
        if pk not in picked:
            picked[pk] = Recommendation(pk, title, name, None, reason)
    return list(picked.values())[:k]
