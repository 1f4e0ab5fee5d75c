"""Changing a collection's embedding model without downtime: add a space, migrate, gate, switch, roll back, retire.

A migration moves one collection from its *active* space to a *target* space:

1. ``migration_start`` sets ``collection.target_space`` (from then on every upload and re-ingestion writes its
   vectors to both spaces, documents.store) and queues the backfill (documents.spaces.tasks), which re-embeds
   the collection's stored chunk text in batches, then builds the target's HNSW index: state ``backfilling``,
   ``indexing``, ``ready``.
2. documents.spaces.quality evaluates the target against the active space (``migration.evaluation``);
   ``gate_reason`` reads it.
3. ``switch`` flips the active space in one transaction, when every chunk has its vector in the target, the
   gate passes (or ``force``) and every live process can embed queries for it (documents.spaces.heartbeat).
   The space left is kept as ``previous_space``: ``rollback`` flips back just as fast.
4. ``retire`` drops a space nobody uses any more (its partition detached concurrently), once the retention
   of a space kept for rollback (SPACE_RETENTION_DAYS) has passed.

Searches read ``collection.active_space`` in their own statement: they see the old space or the new one,
each complete and indexed, never a half of either.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from audit.models import AuditEvent
from audit.services import record
from documents import queue
from documents.embeddings import build_backend
from documents.models import Chunk, ChunkVector, Collection, EmbeddingSpace, SpaceMigration
from documents.spaces import heartbeat, registry, storage
from documents.spaces.document_index import drop_document_index

logger = logging.getLogger(__name__)

BACKFILL_TASK = "documents.spaces.tasks.backfill_space"
OPEN_STATES = (SpaceMigration.State.BACKFILLING, SpaceMigration.State.INDEXING, SpaceMigration.State.READY)
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")


class SpaceRefused(Exception):
    """An operation on embedding spaces that cannot be done now; the message says why and what to do."""


class SwitchRefused(SpaceRefused):
    """A switch (or rollback) refused: not every chunk is embedded, the quality gate failed, or a live process
    could not embed queries for the new space. ``reason`` is the sentence shown to the operator."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------------------------------
# spaces


def space_add(
    *, name: str, backend: str, model: str = "", model_path: str = "", dimensions: int | None = None, user=None
) -> EmbeddingSpace:
    """A new space (status ``building``) with its empty partition, once this process could load its model.

    The model is loaded here so that a typo in its name or path is refused now, not hours later in the
    backfill. Its index is built after the backfill (``create_index(..., concurrently=True)``).
    """
    if not NAME.fullmatch(name or ""):
        raise SpaceRefused(
            f"{name!r} is not a valid space name: use lower-case letters, digits, '-' and '_' (at most 100)."
        )
    if EmbeddingSpace.objects.filter(name=name).exists():
        raise SpaceRefused(f"A space named {name!r} already exists; choose another name.")
    if backend not in EmbeddingSpace.Backend.values:
        raise SpaceRefused(f"Unknown backend {backend!r}: choose one of {', '.join(EmbeddingSpace.Backend.values)}.")
    if dimensions is not None and dimensions < 1:
        raise SpaceRefused(f"Dimensions must be a positive number, not {dimensions}.")
    wanted = dimensions or settings.EMBEDDING_DIMENSIONS
    try:
        built = build_backend(backend, model, model_path, wanted)
    except Exception as error:  # whatever stops the model loading is the operator's answer
        raise SpaceRefused(
            f"The {backend} model {model or '(default)'!r} cannot be loaded here: {error}".rstrip(".") + "."
        ) from error
    fields = registry.describe(built, backend)
    if backend == EmbeddingSpace.Backend.FASTEMBED:
        fields.update(model_path=model_path, fingerprint=model_path or built.model_name)
    if dimensions is not None and fields["dimensions"] != dimensions:
        raise SpaceRefused(
            f"The model {fields['model']!r} makes {fields['dimensions']}-dimensional vectors, not {dimensions}."
        )
    with transaction.atomic():
        space = EmbeddingSpace.objects.create(
            name=name, status=EmbeddingSpace.Status.BUILDING, chunking=registry.chunking(), **fields
        )
        storage.create_partition(space)
        record(
            action=AuditEvent.Action.SPACE_ADDED,
            actor=user,
            target=space,
            backend=space.backend,
            model=space.model,
            dimensions=space.dimensions,
        )
    return space


def _settle(space: EmbeddingSpace) -> None:
    """A space some collection searches is ``active``; one only kept (previous, or a finished target) ``ready``."""
    if space.status == EmbeddingSpace.Status.RETIRED:
        return
    searched = Collection.objects.filter(active_space=space).exists()
    status = EmbeddingSpace.Status.ACTIVE if searched else EmbeddingSpace.Status.READY
    fields: dict[str, object] = {"status": status}
    if searched and space.activated_at is None:
        fields["activated_at"] = timezone.now()
    EmbeddingSpace.objects.filter(pk=space.pk).update(**fields)


# ---------------------------------------------------------------------------------------------------------------
# migrations


def active_space(collection: Collection) -> EmbeddingSpace:
    """The space the collection searches (every collection has one: Collection.save and migration 0015)."""
    if collection.active_space is None:
        raise SpaceRefused(f"The collection {collection} has no active embedding space.")
    return collection.active_space


def open_migration(collection: Collection) -> SpaceMigration | None:
    return (
        SpaceMigration.objects.filter(collection_id=collection.pk, state__in=OPEN_STATES)
        .select_related("source", "target")
        .first()
    )


def migration_start(*, collection: Collection, target: EmbeddingSpace, user=None) -> SpaceMigration:
    """Start moving ``collection`` to ``target``: returns at once, the backfill runs in a worker.

    From the commit on, every upload and re-ingestion of the collection writes both spaces. Chunks that
    already have a vector in ``target`` (a migration back to a space kept for rollback) are not embedded again.
    """
    with transaction.atomic():
        collection = (
            Collection.objects.select_for_update(of=("self",)).select_related("active_space").get(pk=collection.pk)
        )
        target = EmbeddingSpace.objects.get(pk=target.pk)
        if target.status == EmbeddingSpace.Status.RETIRED:
            raise SpaceRefused(f"The space {target} is retired; add a new space for that model.")
        if collection.active_space_id == target.pk:
            raise SpaceRefused(f"The collection {collection} already searches the space {target}.")
        current = open_migration(collection)
        if current is not None:
            state = current.get_state_display().lower()
            raise SpaceRefused(
                f"The collection {collection} is already migrating to {current.target} ({state}); "
                "switch or wait for it first."
            )
        if not storage.partition_exists(target):
            storage.create_partition(target)
        total = Chunk.objects.filter(collection_id=collection.pk).count()
        present = ChunkVector.objects.filter(space_id=target.pk, collection_id=collection.pk).count()
        source = active_space(collection)
        migration = SpaceMigration.objects.create(
            collection=collection,
            source=source,
            target=target,
            state=SpaceMigration.State.BACKFILLING,
            chunks_total=total,
            chunks_done=present,
            started_by=user,
        )
        Collection.objects.filter(pk=collection.pk).update(target_space=target)
        record(
            action=AuditEvent.Action.SPACE_MIGRATE,
            actor=user,
            target=collection,
            migration=migration.pk,
            source=source.name,
            space=target.name,
            chunks=total,
        )
        transaction.on_commit(lambda: send_backfill(migration.pk))
    return migration


def send_backfill(migration_id: int) -> bool:
    """Queue the backfill by name on the large-document queue (a long job never holds back small uploads).

    A broker that is down loses nothing: the sweep (documents.tasks.sweep) sends the task of
    any open migration that no live worker runs.
    """
    app = current_app
    try:
        if app.conf.task_always_eager:
            app.loader.import_default_modules()
            app.tasks[BACKFILL_TASK].delay(migration_id)
        else:
            app.send_task(BACKFILL_TASK, args=[migration_id], queue=queue.ingestion_queues()[1])
    except queue.BROKER_ERRORS as error:
        logger.warning("could not queue the backfill of migration %s (%s); the sweep will", migration_id, error)
        return False
    return True


def rate_key(migration_id: int) -> str:
    return f"space-backfill-rate:{migration_id}"


def vectors_count(collection: Collection, space: EmbeddingSpace | None) -> int:
    if space is None:
        return 0
    return ChunkVector.objects.filter(space_id=space.pk, collection_id=collection.pk).count()


def coverage(collection: Collection, space: EmbeddingSpace | None) -> tuple[int, int]:
    """(chunks of ``collection`` with a vector in ``space``, chunks of ``collection``)."""
    return vectors_count(collection, space), Chunk.objects.filter(collection_id=collection.pk).count()


def migration_status(collection: Collection) -> dict:
    """Where the collection stands: its spaces, the latest migration's state, coverage, progress and ETA.

    ``done``/``total``: the collection's chunks with a vector in the target (the active space when no migration
    is open) and all of its chunks; ``eta_seconds`` from the rate the backfill measured over its batches (None
    until it has one, 0 once every chunk is embedded).
    """
    collection = Collection.objects.select_related("active_space", "target_space", "previous_space").get(
        pk=collection.pk
    )
    migration = SpaceMigration.objects.filter(collection_id=collection.pk).select_related("target").first()
    is_open = migration is not None and migration.state in OPEN_STATES
    space = collection.target_space if is_open and collection.target_space else collection.active_space
    done, total = coverage(collection, space)
    rate = cache.get(rate_key(migration.pk)) if migration is not None and is_open else None
    remaining = max(total - done, 0)
    if not is_open or remaining == 0:
        eta = 0.0 if is_open else None
    else:
        eta = round(remaining / rate, 1) if rate else None
    return {
        "active": collection.active_space.name if collection.active_space else None,
        "target": collection.target_space.name if collection.target_space else None,
        "previous": collection.previous_space.name if collection.previous_space else None,
        "state": migration.state if migration else None,
        "coverage": round(done / total, 4) if total else 1.0,
        "done": done,
        "total": total,
        "rate": round(rate, 1) if rate else None,
        "eta_seconds": eta,
        "migration": migration.pk if migration else None,
        "forced": migration.forced if migration else False,
        "error": migration.error if migration else "",
    }


# ---------------------------------------------------------------------------------------------------------------
# the gate


def _evaluated_at(evaluation: dict) -> datetime | None:
    value = evaluation.get("evaluated_at")
    when = parse_datetime(value) if isinstance(value, str) else value if isinstance(value, datetime) else None
    if when is not None and timezone.is_naive(when):
        when = timezone.make_aware(when, UTC)
    return when


def gate_reason(migration: SpaceMigration) -> str | None:
    """Why the target space must not become active yet (None: the gate passes), from ``migration.evaluation``.

    The evaluation (documents.spaces.quality) must be newer than the backfill's end and have seen every chunk
    embedded; the synthetic queries' source chunks found in the target's top 10 at least SPACE_GATE_MIN_RECALL
    of the time; with labelled queries, nDCG@10 at most SPACE_GATE_MAX_NDCG_DROP below the active space's; the
    target's HNSW index at least SPACE_GATE_MIN_HNSW_RECALL against exact search.
    """
    evaluation = migration.evaluation or {}
    evaluate = f"run `manage.py embedding_spaces evaluate --collection {migration.collection_id}`"
    if not evaluation:
        return f"The target space {migration.target} has not been evaluated: {evaluate}."
    evaluated_at = _evaluated_at(evaluation)
    if evaluated_at is None or migration.backfilled_at is None or evaluated_at < migration.backfilled_at:
        return f"The evaluation is older than the end of the backfill: {evaluate} again."
    seen = evaluation.get("coverage")
    if seen is None or seen < 1:
        return f"The evaluation saw only {float(seen or 0):.1%} of the chunks embedded: {evaluate} again."
    recall = evaluation.get("recall_at_10")
    if recall is None or recall < settings.SPACE_GATE_MIN_RECALL:
        shown = "not measured" if recall is None else f"{recall:.3f}"
        return (
            f"The target space finds the synthetic queries' own chunk in its top 10 too rarely: recall@10 "
            f"{shown}, below the gate's {settings.SPACE_GATE_MIN_RECALL:g} (SPACE_GATE_MIN_RECALL)."
        )
    if evaluation.get("labelled"):
        active, target = evaluation.get("ndcg_at_10_active"), evaluation.get("ndcg_at_10_target")
        if active is None or target is None:
            return f"The labelled evaluation has no nDCG@10 for both spaces: {evaluate} again."
        if active - target > settings.SPACE_GATE_MAX_NDCG_DROP:
            return (
                f"The target space ranks the labelled queries worse: nDCG@10 {target:.3f} against "
                f"{active:.3f}, a drop over the gate's {settings.SPACE_GATE_MAX_NDCG_DROP:g} "
                "(SPACE_GATE_MAX_NDCG_DROP)."
            )
    hnsw = evaluation.get("hnsw_recall_mean")
    if hnsw is None or hnsw < settings.SPACE_GATE_MIN_HNSW_RECALL:
        shown = "not measured" if hnsw is None else f"{hnsw:.3f}"
        return (
            f"The target space's HNSW index misses too many exact neighbours: recall {shown}, below the "
            f"gate's {settings.SPACE_GATE_MIN_HNSW_RECALL:g} (SPACE_GATE_MIN_HNSW_RECALL)."
        )
    return None


# ---------------------------------------------------------------------------------------------------------------
# switch, rollback, retire


def _refuse_unless_embeddable(space: EmbeddingSpace) -> None:
    lacking = heartbeat.processes_lacking(space)
    if lacking:
        named = ", ".join(lacking[:5]) + (f" and {len(lacking) - 5} more" if len(lacking) > 5 else "")
        raise SwitchRefused(
            f"A live process cannot embed queries for {space} yet: {named}. Deploy the model there (or wait up to "
            f"{settings.SPACE_HEARTBEAT_SECONDS:g} s for its next heartbeat), then switch."
        )


def _rebuild_document_vectors(collection: Collection, space: EmbeddingSpace) -> None:
    """The collection's document vectors (similar documents, recommendations) from the new active space's chunks,
    in the switch's (or rollback's) transaction."""
    from documents.similar import document_vectors_rebuild

    document_vectors_rebuild(collection=collection, space=space)


def _requeue_incomplete(collection: Collection) -> tuple[int, int, EmbeddingSpace] | None:
    """A ready migration whose target lacks chunks stored after the backfill's last pass (an ingestion that
    embedded before the migration started) goes back to backfilling, which embeds just those: (missing, total,
    target), or None when nothing is missing."""
    with transaction.atomic():
        migration = (
            SpaceMigration.objects.select_for_update(of=("self",))
            .select_related("target")
            .filter(collection_id=collection.pk, state=SpaceMigration.State.READY)
            .first()
        )
        if migration is None:
            return None
        done, total = coverage(collection, migration.target)
        if done >= total:
            return None
        migration.state = SpaceMigration.State.BACKFILLING
        migration.save(update_fields=["state", "updated_at"])
        transaction.on_commit(lambda: send_backfill(migration.pk))
        return total - done, total, migration.target


def switch(*, collection: Collection, force: bool = False, user=None) -> SpaceMigration:
    """Make the target space the active one, in one transaction; the old one is kept for a rollback.

    Refused (``SwitchRefused``) unless the backfill is done and every chunk has its vector in the target, the
    quality gate passes (``force`` overrides the gate only; the migration and the audit trail say so), and every
    live process can embed queries for the target.
    """
    incomplete = _requeue_incomplete(collection)
    if incomplete is not None:
        missing, total, target = incomplete
        raise SwitchRefused(
            f"{missing:,} of {total:,} chunks have no vector in {target} yet: the backfill was queued again to "
            "embed them; switch when it is ready."
        )
    with transaction.atomic():
        collection = (
            Collection.objects.select_for_update(of=("self",)).select_related("active_space").get(pk=collection.pk)
        )
        migration = (
            SpaceMigration.objects.select_for_update(of=("self",))
            .select_related("target")
            .filter(collection_id=collection.pk, state__in=OPEN_STATES)
            .first()
        )
        if migration is None:
            raise SwitchRefused(f"The collection {collection} has no migration to switch to: start one first.")
        target = migration.target
        done, total = coverage(collection, target)
        if migration.state != SpaceMigration.State.READY:
            raise SwitchRefused(
                f"The target space {target} is not ready: {migration.get_state_display().lower()}, "
                f"{done:,} of {total:,} chunks embedded. Wait for the backfill and its index."
            )
        if done < total:  # a chunk stored in the instant since the check above
            raise SwitchRefused(f"{total - done:,} of {total:,} chunks have no vector in {target} yet; try again.")
        gate = gate_reason(migration)
        if gate and not force:
            raise SwitchRefused(f"{gate} (--force switches anyway.)")
        _refuse_unless_embeddable(target)
        now = timezone.now()
        source = active_space(collection)
        Collection.objects.filter(pk=collection.pk).update(
            previous_space=source, active_space=target, target_space=None
        )
        migration.state, migration.switched_at, migration.finished_at = SpaceMigration.State.SWITCHED, now, now
        migration.forced = bool(gate) and force
        migration.save(update_fields=["state", "switched_at", "finished_at", "forced", "updated_at"])
        _settle(target)
        _settle(source)
        _rebuild_document_vectors(collection, target)
        record(
            action=AuditEvent.Action.SPACE_SWITCH_FORCED if migration.forced else AuditEvent.Action.SPACE_SWITCH,
            actor=user,
            target=collection,
            migration=migration.pk,
            source=source.name,
            space=target.name,
            gate=gate or "passed",
            evaluation=migration.evaluation,
        )
    return migration


def rollback(*, collection: Collection, user=None) -> Collection:
    """Search the space before the last switch again (active ↔ previous, one transaction).

    Refused while a migration is open, once the previous space was retired, or when chunks stored since the
    switch have no vector in it (the rollback would hide them from vector search): migrate back instead, which
    embeds only those.
    """
    with transaction.atomic():
        collection = (
            Collection.objects.select_for_update(of=("self",))
            .select_related("active_space", "previous_space")
            .get(pk=collection.pk)
        )
        previous, current = collection.previous_space, active_space(collection)
        if previous is None:
            raise SwitchRefused(f"The collection {collection} has no previous space to roll back to.")
        if collection.target_space_id is not None:
            raise SwitchRefused(
                f"The collection {collection} is migrating to another space; switch or wait for it first."
            )
        if previous.status == EmbeddingSpace.Status.RETIRED:
            raise SwitchRefused(f"The previous space {previous} was retired: its vectors are gone.")
        done, total = coverage(collection, previous)
        if done < total:
            raise SwitchRefused(
                f"{total - done:,} chunks stored since the switch have no vector in {previous}: migrate back "
                f"instead (`manage.py embedding_spaces migrate --collection {collection.pk} --to {previous}`), "
                "which embeds only those."
            )
        _refuse_unless_embeddable(previous)
        Collection.objects.filter(pk=collection.pk).update(active_space=previous, previous_space=current)
        last = (
            SpaceMigration.objects.select_for_update()
            .filter(collection_id=collection.pk, state=SpaceMigration.State.SWITCHED, target=current)
            .first()
        )
        if last is not None:
            last.state, last.finished_at = SpaceMigration.State.ROLLED_BACK, timezone.now()
            last.save(update_fields=["state", "finished_at", "updated_at"])
        _settle(previous)
        _settle(current)
        _rebuild_document_vectors(collection, previous)
        record(
            action=AuditEvent.Action.SPACE_ROLLBACK,
            actor=user,
            target=collection,
            source=current.name,
            space=previous.name,
            migration=last.pk if last else None,
        )
    collection.refresh_from_db()
    return collection


def retention_ends(space: EmbeddingSpace, collection: Collection) -> datetime | None:
    """When the space ``collection`` left at its last switch may be retired (None: it never switched away)."""
    left = (
        SpaceMigration.objects.filter(collection_id=collection.pk, source=space, switched_at__isnull=False)
        .order_by("-switched_at")
        .values_list("switched_at", flat=True)
        .first()
    )
    return left + timedelta(days=settings.SPACE_RETENTION_DAYS) if left else None


def retire(*, space: EmbeddingSpace, user=None) -> EmbeddingSpace:
    """Drop a space's vectors and indexes (its partition, detached concurrently: no long lock on the table).

    Refused while a collection searches it or migrates to it, and while it is kept for a rollback within
    SPACE_RETENTION_DAYS of the switch; after that the collections' ``previous_space`` is cleared. Runs outside
    a transaction (DETACH PARTITION ... CONCURRENTLY cannot run in one).
    """
    if connection.in_atomic_block:
        raise SpaceRefused("Retiring a space detaches its partition concurrently: call it outside a transaction.")
    space = EmbeddingSpace.objects.get(pk=space.pk)
    if space.status == EmbeddingSpace.Status.RETIRED and not storage.partition_exists(space):
        raise SpaceRefused(f"The space {space} is already retired.")
    with transaction.atomic():
        using = Collection.objects.select_for_update().filter(Q(active_space=space) | Q(target_space=space))
        names = [str(collection) for collection in using]
        if names:
            raise SpaceRefused(
                f"The space {space} is in use by {len(names)} collection{'s' if len(names) != 1 else ''} "
                f"({', '.join(names[:5])}): migrate {'them' if len(names) != 1 else 'it'} to another space first."
            )
        now = timezone.now()
        kept = list(Collection.objects.select_for_update().filter(previous_space=space))
        for collection in kept:
            ends = retention_ends(space, collection)
            if ends is not None and ends > now:
                raise SpaceRefused(
                    f"The space {space} is kept for a rollback of {collection} until {ends:%Y-%m-%d %H:%M} UTC "
                    f"(SPACE_RETENTION_DAYS={settings.SPACE_RETENTION_DAYS})."
                )
        Collection.objects.filter(previous_space=space).update(previous_space=None)
        EmbeddingSpace.objects.filter(pk=space.pk).update(status=EmbeddingSpace.Status.RETIRED, retired_at=now)
        record(
            action=AuditEvent.Action.SPACE_RETIRE,
            actor=user,
            target=space,
            released=[collection.pk for collection in kept],
        )
    storage.drop_partition(space)
    drop_document_index(space)
    space.refresh_from_db()
    return space
