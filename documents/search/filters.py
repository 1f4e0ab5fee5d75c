"""What a search is narrowed to (collections, documents, file types, tags and other metadata, dates), as SQL.

Filters only ever narrow: every chunk predicate here starts from the collections the user may read
(sql.readable_collections, or the covered collections a search's first statement found with it), so no
filter can reach a chunk its user may not read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from core.http import parse_id
from core.text import without_surrogates
from documents.search.sql import COLLECTION, DOCUMENT, SCOPE, readable_collections


@dataclass(frozen=True)
class Filters:
    collections: tuple[int, ...] = ()
    documents: tuple[int, ...] = ()
    content_types: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON containment on the chunk's metadata
    created_after: date | None = None
    created_before: date | None = None
    # A collection's id or name, as the API takes it: the readable collection of that id or name (the
    # first by id). search() raises UnknownCollection when the user can read none.
    collection: str = ""


class UnknownCollection(LookupError):
    """``Filters.collection`` names no collection that the user can read."""


def chunk_predicate(user: Any, filters: Filters, model_name: str | None) -> tuple[str, list[Any]]:
    """The predicate on chunks (alias ``c``) that ``user`` may read and ``filters`` keeps, with its parameters.

    On its own, for a statement of your own over the chunk table (the benches compare pgvector's plain
    query with this predicate against search()); search() itself decides the collections once, in its first
    statement, and filters on them with ``scoped_predicate``. ``model_name`` keeps only that embedding
    model's vectors (None: any).
    """
    readable, params = readable_collections(user.pk)
    return _predicate(f"c.collection_id IN ({readable})", params, filters, model_name, collections=True)


def scoped_predicate(filters: Filters, model_name: str | None) -> tuple[str, list[Any]]:
    """The chunks' predicate after sql.scope_statement(): in the covered collections (SCOPE), and filtered."""
    return _predicate(f"c.collection_id = ANY({SCOPE})", [], filters, model_name)


def covered_collections(user: Any, filters: Filters, alias: str) -> tuple[str, list[Any]]:
    """The predicate on collections (alias ``alias``) a search covers: readable by ``user``, and asked for."""
    readable, readable_params = readable_collections(user.pk)
    sql, params = f"{alias}.id IN ({readable})", list(readable_params)
    if filters.collections:
        sql += f" AND {alias}.id = ANY(%s)"
        params.append(list(filters.collections))
    if filters.collection:
        # The first readable collection of that name or id: min() over readable ones only, so a name
        # another user also gave a collection never resolves to theirs.
        sql += (f" AND {alias}.id = (SELECT min(r.id) FROM {COLLECTION} r"
                f" WHERE (r.name = %s OR r.id = %s) AND r.id IN ({readable}))")
        reference = filters.collection
        storable = "\x00" not in reference and without_surrogates(reference) == reference
        name = reference if storable else None  # text cannot hold NUL or a lone surrogate: no such name
        params += [name, parse_id(reference), *readable_params]
    return sql, params


def _predicate(
    scope: str, params: list[Any], filters: Filters, model_name: str | None, *, collections: bool = False,
) -> tuple[str, list[Any]]:
    clauses = [scope]
    params = list(params)
    if model_name is not None:
        # Only vectors from the model that embeds the query are comparable with it.
        clauses.append("c.embedding_model = %s")
        params.append(model_name)
    if collections and filters.collections:
        clauses.append("c.collection_id = ANY(%s)")
        params.append(list(filters.collections))
    if filters.documents:
        clauses.append("c.document_id = ANY(%s)")
        params.append(list(filters.documents))
    if filters.metadata:
        clauses.append("c.metadata @> %s::jsonb")
        params.append(json.dumps(filters.metadata))
    if filters.content_types or filters.created_after or filters.created_before:
        sub = ["d2.id = c.document_id"]
        if filters.content_types:
            sub.append("d2.content_type = ANY(%s)")
            params.append(list(filters.content_types))
        if filters.created_after:
            sub.append("d2.created_at >= %s")
            params.append(filters.created_after)
        if filters.created_before:
            sub.append("d2.created_at < %s")
            params.append(filters.created_before)
        clauses.append(f"EXISTS (SELECT 1 FROM {DOCUMENT} d2 WHERE {' AND '.join(sub)})")
    return " AND ".join(clauses), params
