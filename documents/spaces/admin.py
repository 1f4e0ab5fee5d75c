"""The admin of embedding spaces (imported by documents.admin): spaces, each collection's state, the switch.

- Embedding spaces: each space's model, status, vectors and size, the collections using it; "Add" goes through
  ``space_add`` (the model is loaded, its partition created); the action "Retire" through ``retire``.
- Collections and spaces (a page of this admin): every collection's active/target/previous space, its
  migration's state, progress and ETA, evaluation and drift; buttons migrate, evaluate, switch (a confirmation
  page with the gate's reason and a force checkbox), roll back. ``?old=1``: only the collections still on a space
  that is not the installation's default (EMBEDDING_* changed since), the ones to migrate.
- Space migrations: their history, read only, with the evaluation and drift figures.

Every change calls documents.spaces.migration / quality, as the command and the API do.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Q, Subquery
from django.db.models.expressions import RawSQL
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from core.http import parse_id
from documents.models import ChunkVector, Collection, EmbeddingSpace, SpaceMigration
from documents.spaces import default_space, overview, quality, storage
from documents.spaces.migration import (
    OPEN_STATES,
    SpaceRefused,
    gate_reason,
    migration_start,
    retire,
    rollback,
    space_add,
    switch,
)


def evaluation_summary(evaluation: dict) -> str:
    """The evaluation's figures in one line (the gate reads recall@10, nDCG@10 when labelled, HNSW recall)."""
    if not evaluation:
        return "not evaluated"
    parts = [f"recall@10 {_f(evaluation.get('recall_at_10'))}", f"overlap@10 {_f(evaluation.get('overlap_at_10'))}"]
    if evaluation.get("labelled"):
        parts.append(f"nDCG@10 {_f(evaluation.get('ndcg_at_10_active'))} → {_f(evaluation.get('ndcg_at_10_target'))}")
        parts.append(
            f"recall@100 {_f(evaluation.get('recall_at_100_active'))} → {_f(evaluation.get('recall_at_100_target'))}"
        )
    parts.append(
        f"HNSW recall mean {_f(evaluation.get('hnsw_recall_mean'))} / p10 {_f(evaluation.get('hnsw_recall_p10'))}"
        f" / min {_f(evaluation.get('hnsw_recall_min'))}"
    )
    parts.append(f"{evaluation.get('queries', 0)} queries, coverage {_f(evaluation.get('coverage'))}")
    return ", ".join(parts)


def drift_summary(drift: dict) -> str:
    if not drift:
        return "not measured"
    if drift.get("kind") == "same_model":
        return (
            f"same model: cosine(old, new) p1 {_f(drift.get('cosine_p1'))}, p50 {_f(drift.get('cosine_p50'))}, "
            f"mean {_f(drift.get('cosine_mean'))} over {drift.get('chunks', 0)} chunks"
        )
    changes = [f"overlap@10 {_f(drift.get('overlap_at_10'))}", f"recall@10 {_f(drift.get('recall_at_10'))}"]
    if drift.get("ndcg_at_10_change") is not None:
        changes.append(f"nDCG@10 {drift['ndcg_at_10_change']:+.3f}")
    if drift.get("recall_at_100_change") is not None:
        changes.append(f"recall@100 {drift['recall_at_100_change']:+.3f}")
    return "new model: " + ", ".join(changes)


def _f(value) -> str:
    return "—" if value is None else f"{value:.3f}"


class SpaceAddForm(forms.ModelForm):
    class Meta:
        model = EmbeddingSpace
        fields = ("name", "backend", "model", "model_path", "dimensions")

    dimensions = forms.IntegerField(required=False, min_value=1, help_text="Empty: what the model makes.")
    model = forms.CharField(required=False, help_text="Empty: the backend's default model.")

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:  # the model is loaded here: a typo is refused on the form, not hours later in the backfill
            self.space = space_add(
                name=cleaned["name"],
                backend=cleaned["backend"],
                model=cleaned.get("model") or "",
                model_path=cleaned.get("model_path") or "",
                dimensions=cleaned.get("dimensions"),
                user=getattr(self, "user", None),
            )
        except SpaceRefused as refused:
            raise forms.ValidationError(str(refused)) from refused
        return cleaned

    def validate_unique(self):
        pass  # space_add said whether the name is taken


@admin.register(EmbeddingSpace)
class EmbeddingSpaceAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "backend",
        "model",
        "dimensions",
        "status",
        "vectors",
        "size",
        "collections_using",
        "is_default",
        "created_at",
    )
    list_filter = ("status", "backend")
    search_fields = ("name", "model", "fingerprint")
    readonly_fields = (
        "name",
        "backend",
        "model",
        "model_path",
        "fingerprint",
        "dimensions",
        "chunking",
        "status",
        "created_at",
        "activated_at",
        "retired_at",
    )
    actions = ("retire_spaces",)
    change_list_template = "admin/documents/embeddingspace/change_list.html"

    def get_queryset(self, request):
        rows = (
            ChunkVector.objects.filter(space=OuterRef("pk"))
            .order_by()
            .values("space")
            .annotate(n=Count("chunk"))
            .values("n")
        )
        using = (
            Collection.objects.filter(active_space=OuterRef("pk"))
            .order_by()
            .values("active_space")
            .annotate(n=Count("id"))
            .values("n")
        )
        # The partition's name is storage.partition_name's: the parent table's name and "_s<space id>".
        size = RawSQL(
            f"coalesce(pg_total_relation_size(to_regclass(%s || {EmbeddingSpace._meta.db_table}.id)), 0)",
            [f"{storage.PARENT}_s"],
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_vectors=Subquery(rows),
                n_bytes=size,
                n_collections=Subquery(using),
            )
        )

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = type("SpaceAddForm", (SpaceAddForm,), {"user": request.user})
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return ("name", "backend", "model", "model_path", "dimensions") if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if not change:  # created by the form's space_add
            obj.__dict__.update(form.space.__dict__)

    def has_delete_permission(self, request, obj=None):
        return False  # a space is retired (its partition dropped), never deleted: migrations refer to it

    @admin.display(description="vectors", ordering="n_vectors")
    def vectors(self, obj):
        return f"{obj.n_vectors or 0:,}"

    @admin.display(description="size", ordering="n_bytes")
    def size(self, obj):
        return f"{(obj.n_bytes or 0) / 2**20:.1f} MiB"

    @admin.display(description="collections", ordering="n_collections")
    def collections_using(self, obj):
        # To the collections page, showing those that search, fill or keep this space.
        url = reverse("admin:documents_embeddingspace_collections") + f"?space={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, obj.n_collections or 0)

    @admin.display(description="default", boolean=True)
    def is_default(self, obj):
        return obj.pk == default_space().pk

    @admin.action(description="Retire selected spaces (drop their vectors and indexes)", permissions=["change"])
    def retire_spaces(self, request, queryset):
        for space in queryset:
            try:
                retire(space=space, user=request.user)
            except SpaceRefused as refused:
                self.message_user(request, str(refused), messages.ERROR)
            else:
                self.message_user(request, f"Retired {space}: its vectors and indexes are dropped.", messages.SUCCESS)

    def changelist_view(self, request, extra_context=None):
        extra = {
            "off_default": len(overview.collections_off_default()),
            "collections_url": reverse("admin:documents_embeddingspace_collections"),
        }
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    def get_urls(self):
        own = [
            path(
                "collections/",
                self.admin_site.admin_view(self.collections_view),
                name="documents_embeddingspace_collections",
            ),
            path(
                "collections/<int:collection_id>/switch/",
                self.admin_site.admin_view(self.switch_view),
                name="documents_embeddingspace_switch",
            ),
            path(
                "collections/<int:collection_id>/<str:action>/",
                self.admin_site.admin_view(require_POST(self.collection_action)),
                name="documents_embeddingspace_action",
            ),
        ]
        return own + super().get_urls()

    def _context(self, request: HttpRequest, title: str) -> dict:
        return {**self.admin_site.each_context(request), "title": title, "opts": self.model._meta}

    def collections_view(self, request: HttpRequest) -> TemplateResponse:
        """Every collection with its state and actions; ``?old=1``: only those not on the default space;
        ``?space=<id>``: only those that search, fill or keep (for a rollback) that space."""
        self._require(request)
        default = default_space()
        old_only = request.GET.get("old") == "1"
        space_id = parse_id(request.GET.get("space", ""))
        space = EmbeddingSpace.objects.filter(pk=space_id).first() if space_id is not None else None
        if old_only:
            collections = overview.collections_off_default()
        else:
            chosen = Collection.objects.select_related("active_space", "owner").order_by("name", "id")
            if space is not None:
                chosen = chosen.filter(Q(active_space=space) | Q(target_space=space) | Q(previous_space=space))
            collections = list(chosen[:200])
        rows = []
        for collection in collections:
            state = overview.collection_state(collection)
            rows.append(
                {
                    "collection": collection,
                    "state": state,
                    "old": collection.active_space_id != default.pk,
                    "open": state["state"] in OPEN_STATES,
                    "evaluation": evaluation_summary(state["evaluation"]),
                    "drift": drift_summary(state["drift"]),
                }
            )
        context = {
            **self._context(request, "Collections and embedding spaces"),
            "rows": rows,
            "old_only": old_only,
            "space": space,
            "default": default,
            "spaces": EmbeddingSpace.objects.exclude(status=EmbeddingSpace.Status.RETIRED).order_by("name"),
        }
        return TemplateResponse(request, "admin/documents/embeddingspace/collections.html", context)

    def collection_action(self, request: HttpRequest, collection_id: int, action: str) -> HttpResponseRedirect:
        """migrate (to the posted ``to`` space), evaluate, rollback: then back to the collections page."""
        self._require(request)
        collection = get_object_or_404(Collection.objects.select_related("active_space"), pk=collection_id)
        try:
            if action == "migrate":
                target = get_object_or_404(EmbeddingSpace, name=request.POST.get("to", ""))
                migration_start(collection=collection, target=target, user=request.user)
                done = f"Migrating {collection} to {target}: the backfill runs in a worker."
            elif action == "evaluate":
                result = quality.evaluate(collection=collection)
                done = f"Evaluated {collection}: {evaluation_summary(result)}."
            elif action == "rollback":
                rolled = rollback(collection=collection, user=request.user)
                done = f"{collection} searches {rolled.active_space} again."
            else:
                self.message_user(request, f"Unknown action {action!r}.", messages.ERROR)
                return self._back(request)
        except (SpaceRefused, quality.EvaluationError) as refused:
            self.message_user(request, str(refused), messages.ERROR)
        else:
            self.message_user(request, done, messages.SUCCESS)
        return self._back(request)

    def switch_view(self, request: HttpRequest, collection_id: int):
        """GET: the gate's verdict and the evaluation, with a force checkbox; POST: switch (or say why not)."""
        self._require(request)
        collection = get_object_or_404(Collection.objects.select_related("active_space"), pk=collection_id)
        migration = quality.open_migration(collection)
        if request.method == "POST":
            try:
                switch(collection=collection, force=request.POST.get("force") == "on", user=request.user)
            except SpaceRefused as refused:
                self.message_user(request, str(refused), messages.ERROR)
            else:
                collection.refresh_from_db()
                self.message_user(request, f"{collection} now searches {collection.active_space}.", messages.SUCCESS)
            return self._back(request)
        context = {
            **self._context(request, f"Switch {collection} to another embedding space"),
            "collection": collection,
            "migration": migration,
            "reason": gate_reason(migration) if migration else None,
            "state": overview.collection_state(collection),
            "evaluation": evaluation_summary(migration.evaluation) if migration else "",
            "drift": drift_summary(migration.drift) if migration else "",
        }
        return TemplateResponse(request, "admin/documents/embeddingspace/switch.html", context)

    def _require(self, request: HttpRequest) -> None:
        if not self.has_change_permission(request):
            raise PermissionDenied

    def _back(self, request: HttpRequest) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:documents_embeddingspace_collections"))


@admin.register(SpaceMigration)
class SpaceMigrationAdmin(admin.ModelAdmin):
    list_display = (
        "collection",
        "source",
        "target",
        "state",
        "progress",
        "evaluated",
        "drifted",
        "forced",
        "created_at",
    )
    list_filter = ("state", "forced", "target")
    list_select_related = ("collection", "source", "target")
    search_fields = ("collection__name", "source__name", "target__name")
    readonly_fields = (
        "collection",
        "source",
        "target",
        "state",
        "cursor",
        "chunks_total",
        "chunks_done",
        "error",
        "evaluated",
        "drifted",
        "evaluation",
        "drift",
        "forced",
        "started_by",
        "created_at",
        "updated_at",
        "backfilled_at",
        "switched_at",
        "finished_at",
    )

    def has_add_permission(self, request):
        return False  # started from the collections page (migrate), the command or the API

    def has_delete_permission(self, request, obj=None):
        return False  # the record of a switch

    @admin.display(description="progress")
    def progress(self, obj):
        return f"{obj.chunks_done:,} / {obj.chunks_total:,}"

    @admin.display(description="evaluation")
    def evaluated(self, obj):
        return evaluation_summary(obj.evaluation)

    @admin.display(description="drift")
    def drifted(self, obj):
        return drift_summary(obj.drift)
