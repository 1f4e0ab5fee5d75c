"""What the operators' interfaces show about embedding spaces (the command, the REST API, the admin): read only.

One place for the figures all three print, so that they agree: each space's rows, size and collections, and a
collection's state (documents.spaces.migration.migration_status, with its open migration's evaluation and drift).
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import Count

from documents.models import ChunkVector, Collection, EmbeddingSpace, SpaceMigration
from documents.spaces import default_space, storage
from documents.spaces.migration import migration_status

VECTORS = connection.ops.quote_name(ChunkVector._meta.db_table)


def spaces_overview() -> list[dict[str, Any]]:
    """Every space, oldest first: its model, status, vectors (rows, bytes of its partition with its indexes),
    and how many collections search it (active), are filling it (target) or keep it for a rollback (previous)."""
    spaces = list(EmbeddingSpace.objects.order_by("id"))
    used = {
        role: dict(
            Collection.objects.filter(**{f"{role}_space__isnull": False})
            .values_list(f"{role}_space")
            .annotate(n=Count("id"))
            .values_list(f"{role}_space", "n")
        )
        for role in ("active", "target", "previous")
    }
    rows, sizes = _rows_and_sizes(spaces)
    default = default_space().pk
    return [
        {
            "id": space.pk,
            "name": space.name,
            "backend": space.backend,
            "model": space.model,
            "dimensions": space.dimensions,
            "fingerprint": space.fingerprint,
            "status": space.status,
            "default": space.pk == default,
            "rows": rows.get(space.pk, 0),
            "bytes": sizes.get(space.pk, 0),
            "collections": used["active"].get(space.pk, 0),
            "migrating_to": used["target"].get(space.pk, 0),
            "kept_for_rollback": used["previous"].get(space.pk, 0),
            "created_at": space.created_at.isoformat(),
            "activated_at": space.activated_at.isoformat() if space.activated_at else None,
            "retired_at": space.retired_at.isoformat() if space.retired_at else None,
        }
        for space in spaces
    ]


def _rows_and_sizes(spaces: list[EmbeddingSpace]) -> tuple[dict[int, int], dict[int, int]]:
    """Exact rows per space (one scan of the parent table: partitions are counted separately) and each
    partition's size on disk with its indexes (0 once retired: the partition is gone)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT space_id, count(*) FROM {VECTORS} GROUP BY space_id")
        rows = dict(cursor.fetchall())
        sizes: dict[int, int] = {}
        if spaces:
            cursor.execute(
                "SELECT s.id, coalesce(pg_total_relation_size(to_regclass(s.name)), 0) "
                "FROM unnest(%s::bigint[], %s::text[]) AS s(id, name)",
                [[space.pk for space in spaces], [storage.partition_name(space) for space in spaces]],
            )
            sizes = dict(cursor.fetchall())
    return rows, sizes


def collection_state(collection: Collection) -> dict[str, Any]:
    """``migration_status`` with the latest migration's target, evaluation, drift and dates."""
    state = migration_status(collection)
    latest = SpaceMigration.objects.filter(collection_id=collection.pk).select_related("source", "target").first()
    state.update(
        collection=collection.pk,
        collection_name=collection.name,
        migration_source=latest.source.name if latest else None,
        migration_target=latest.target.name if latest else None,
        evaluation=latest.evaluation if latest else {},
        drift=latest.drift if latest else {},
        started_at=latest.created_at.isoformat() if latest else None,
        switched_at=latest.switched_at.isoformat() if latest and latest.switched_at else None,
    )
    return state


def collections_off_default(limit: int = 200) -> list[Collection]:
    """Collections still searching a space other than the installation's default (EMBEDDING_* changed since):
    the ones an operator may want to migrate."""
    return list(
        Collection.objects.exclude(active_space=default_space())
        .select_related("active_space", "target_space", "owner")
        .order_by("name", "id")[:limit]
    )
