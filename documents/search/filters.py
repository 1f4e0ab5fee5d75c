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
from documents.search.sql import CHUNK, COLLECTION, DOCUMENT, SCOPE, readable_collections


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


def chunk_predicate(user: Any, filters: Filters, *, alias: str = "c") -> tuple[str, list[Any]]:
    """The predicate on chunks (alias ``c``), or chunk vectors (alias ``v``), that ``user`` may read and ``filters``
    keeps, with its parameters.

    On its own, for a statement of your own (the benches compare pgvector's plain query with this predicate
    against search()); search() itself decides the collections once, in its first statement, and filters on
    them with ``scoped_predicate``. Over chunk vectors, add the space (``v.space_id = <id>``): only vectors of
    one space are comparable.
    """
    readable, params = readable_collections(user.pk)
    return _predicate(f"{alias}.collection_id IN ({readable})", params, filters, alias=alias, collections=True)


def scoped_predicate(filters: Filters, *, alias: str = "c") -> tuple[str, list[Any]]:
    """The predicate after sql.scope_statement() on chunks (alias ``c``: in the covered collections, SCOPE), or on
    one vector arm's chunk vectors (alias ``v``: the statement itself keeps the arm's collections), filtered."""
    return _predicate(f"{alias}.collection_id = ANY({SCOPE})" if alias == "c" else "true", [], filters, alias=alias)


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
    scope: str, params: list[Any], filters: Filters, *, alias: str = "c", collections: bool = False,
) -> tuple[str, list[Any]]:
    # Over chunk vectors (alias "v"), which copy the chunk's collection and document, only the metadata needs
    # the chunk's row: one primary-key probe per candidate, and only when a metadata filter is asked for.
    clauses = [scope]
    params = list(params)
    if collections and filters.collections:
        clauses.append(f"{alias}.collection_id = ANY(%s)")
        params.append(list(filters.collections))
    if filters.documents:
        clauses.append(f"{alias}.document_id = ANY(%s)")
        params.append(list(filters.documents))
    if filters.metadata:
        if alias == "c":
            clauses.append("c.metadata @> %s::jsonb")
        else:
            clauses.append(
                f"EXISTS (SELECT 1 FROM {CHUNK} c2 WHERE c2.id = {alias}.chunk_id AND c2.metadata @> %s::jsonb)"
            )
        params.append(json.dumps(filters.metadata))
    if filters.content_types or filters.created_after or filters.created_before:
        sub = [f"d2.id = {alias}.document_id"]
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
