"""/api/v1/embedding-spaces and /api/v1/collections/{id}/embedding-space/...: embedding spaces for staff (issue 14).

Staff with the admin's permission on embedding spaces only (``documents.view_embeddingspace`` to read,
``documents.change_embeddingspace`` for every change, as the admin's pages ask; 403 for anyone else): a space's model
and a collection's switch are an operator's decisions, whoever owns the collection. Endpoints translate to
documents.spaces (migration: the changes; quality: the evaluation; overview: what is shown); a refusal is its sentence
in ``detail``, 409 (the switch's gate included, unless ``force``).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Router, Schema, Status
from ninja.errors import HttpError

from documents.models import Collection, EmbeddingSpace
from documents.spaces import overview, quality
from documents.spaces.migration import SpaceRefused, migration_start, retire, rollback, space_add, switch

spaces_router = Router(tags=["embedding spaces"])
collections_router = Router(tags=["embedding spaces"])


class Problem(Schema):
    detail: str


class SpaceIn(Schema):
    name: str
    backend: str
    model: str = ""
    model_path: str = ""
    dimensions: int | None = None


class MigrateIn(Schema):
    to: str  # the target space's name


class EvaluateIn(Schema):
    # BEIR's content as JSON: query id → text, and query id → the external ids of its relevant documents.
    queries: dict[str, str] | None = None
    qrels: dict[str, list[str]] | None = None
    sample: int = 50


class SwitchIn(Schema):
    force: bool = False


VIEW = "documents.view_embeddingspace"


def _staff(request: HttpRequest, *, change: bool = True) -> None:
    """The one check of every endpoint here: staff, with the permission the admin asks for the same thing (changing
    an embedding space, or with ``change=False`` seeing them)."""
    user = request.user
    if not (user.is_active and user.is_staff):
        raise HttpError(403, "Only staff may manage embedding spaces.")
    # As Django's admin: changing implies seeing.
    if not (user.has_perm("documents.change_embeddingspace") or (not change and user.has_perm(VIEW))):
        needed = "change" if change else "view"
        raise HttpError(403, f"Your staff account may not {needed} embedding spaces: an administrator can give it the "
                        f"permission “Can {needed} embedding space”.")


def _collection(request: HttpRequest, collection_id: int, *, change: bool = True) -> Collection:
    _staff(request, change=change)
    return get_object_or_404(Collection.objects.select_related("active_space"), pk=collection_id)


def _space_out(name: str) -> dict[str, Any]:
    return next(space for space in overview.spaces_overview() if space["name"] == name)


@spaces_router.get("", response={200: list[dict[str, Any]], 403: Problem})
def list_spaces(request):
    """Every space: backend, model, dimensions, status, vectors (rows, bytes), collections using it."""
    _staff(request, change=False)
    return Status(200, overview.spaces_overview())


@spaces_router.post("", response={201: dict[str, Any], 400: Problem, 403: Problem})
def add_space(request, body: SpaceIn):
    """Add a space (status ``building``); its model is loaded now, so that a wrong name or path is refused at once."""
    _staff(request)
    try:
        space = space_add(
            name=body.name,
            backend=body.backend,
            model=body.model,
            model_path=body.model_path,
            dimensions=body.dimensions,
            user=request.user,
        )
    except SpaceRefused as refused:
        return Status(400, {"detail": str(refused)})
    return Status(201, _space_out(space.name))


@spaces_router.post("/{name}/retire", response={200: dict[str, Any], 403: Problem, 404: Problem, 409: Problem})
def retire_space(request, name: str):
    """Drop a space's vectors and indexes; 409 while a collection uses it (or keeps it for a rollback)."""
    _staff(request)
    space = get_object_or_404(EmbeddingSpace, name=name)
    try:
        retire(space=space, user=request.user)
    except SpaceRefused as refused:
        return Status(409, {"detail": str(refused)})
    return Status(200, _space_out(space.name))


@collections_router.get("/{collection_id}/embedding-space", response={200: dict[str, Any], 403: Problem})
def collection_space(request, collection_id: int):
    """Its active, target and previous spaces; the migration's state, coverage, progress, ETA, evaluation, drift."""
    return Status(200, overview.collection_state(_collection(request, collection_id, change=False)))


@collections_router.post(
    "/{collection_id}/embedding-space/migrate", response={202: dict[str, Any], 403: Problem, 404: Problem, 409: Problem}
)
def migrate(request, collection_id: int, body: MigrateIn):
    """Start moving the collection to the space ``to``: 202 at once, the backfill runs in a worker."""
    collection = _collection(request, collection_id)
    target = get_object_or_404(EmbeddingSpace, name=body.to)
    try:
        migration_start(collection=collection, target=target, user=request.user)
    except SpaceRefused as refused:
        return Status(409, {"detail": str(refused)})
    return Status(202, overview.collection_state(collection))


@collections_router.post(
    "/{collection_id}/embedding-space/evaluate",
    response={200: dict[str, Any], 400: Problem, 403: Problem, 409: Problem},
)
def evaluate(request, collection_id: int, body: EvaluateIn):
    """Compare the active and target spaces (labelled when ``queries`` and ``qrels`` are given); stored on the
    migration for the switch's gate. 409 when no migration is in progress."""
    collection = _collection(request, collection_id)
    if (body.queries is None) != (body.qrels is None):
        return Status(400, {"detail": "Give both the queries and their relevance judgments (qrels), or neither."})
    if not 1 <= body.sample <= 1000:
        return Status(400, {"detail": "The sample must be between 1 and 1000 queries."})
    qrels = {qid: set(ids) for qid, ids in body.qrels.items()} if body.qrels is not None else None
    if quality.open_migration(collection) is None:
        return Status(
            409,
            {
                "detail": f"Collection {collection.name!r} has no migration in progress: start one "
                "(migrate) before evaluating."
            },
        )
    try:
        result = quality.evaluate(collection=collection, queries=body.queries, qrels=qrels, sample=body.sample)
    except quality.EvaluationError as error:
        return Status(400, {"detail": str(error)})
    return Status(200, result)


@collections_router.post(
    "/{collection_id}/embedding-space/switch", response={200: dict[str, Any], 403: Problem, 409: Problem}
)
def switch_space(request, collection_id: int, body: SwitchIn):
    """Make the target space active in one transaction; 409 with the reason when refused (coverage, the quality
    gate — ``force`` overrides the gate only, and the audit trail says so — or a process that cannot embed it)."""
    collection = _collection(request, collection_id)
    try:
        switch(collection=collection, force=body.force, user=request.user)
    except SpaceRefused as refused:
        return Status(409, {"detail": str(refused)})
    return Status(200, overview.collection_state(collection))


@collections_router.post(
    "/{collection_id}/embedding-space/rollback", response={200: dict[str, Any], 403: Problem, 409: Problem}
)
def rollback_space(request, collection_id: int):
    """Search the space before the last switch again (instant: its vectors were kept); 409 with the reason."""
    collection = _collection(request, collection_id)
    try:
        rollback(collection=collection, user=request.user)
    except SpaceRefused as refused:
        return Status(409, {"detail": str(refused)})
    return Status(200, overview.collection_state(collection))
