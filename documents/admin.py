"""The admin: upload, follow and fix ingestion; share collections."""

from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from django.utils.html import format_html

from core import ratelimit
from documents import services
from documents.exceptions import SUPPORTED_FORMATS, DuplicateDocument, UploadRejected
from documents.models import Chunk, ChunkVector, Collection, Document, Invitation


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "distance", "document_count", "created_at")
    search_fields = ("name", "owner__username")
    list_filter = ("distance", "created_at")
    filter_horizontal = ("members",)
    autocomplete_fields = ("owner",)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("owner").annotate(n_documents=Count("documents"))

    @admin.display(ordering="n_documents", description="documents")
    def document_count(self, obj):
        return obj.n_documents

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and "distance" in form.changed_data:
            # The chunks moved with the save (a trigger, documents migration 0008).
            moved = Chunk.objects.filter(collection=obj).count()
            self.message_user(request, f"{moved} chunk(s) are now compared by {obj.get_distance_display()}.")


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    """Invitations waiting for an answer, to look at: owners invite on the collection's page and only the invitee
    accepts (documents.sharing). Staff who must share a collection at once edit its members above."""

    list_display = ("collection", "invitee", "invited_by", "created_at")
    list_select_related = ("collection", "invitee", "invited_by")
    search_fields = ("collection__name", "invitee__username", "invited_by__username")
    list_filter = ("created_at",)
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class DocumentAddForm(forms.ModelForm):
    file = forms.FileField(help_text=f"{SUPPORTED_FORMATS}.")
    title = forms.CharField(required=False, help_text="Defaults to the file name.")

    class Meta:
        model = Document
        fields = ("collection", "file", "title", "metadata")

    request = None  # bound by DocumentAdmin.get_form: the upload counts against its user's limit
    retry_after = 0  # set when that limit refused the upload (DocumentAdmin.add_view answers 429)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("file") and cleaned.get("collection"):
            allowed, wait = ratelimit.hit("upload", self.request.user) if self.request else (True, 0)
            if not allowed:
                self.retry_after = wait
                raise forms.ValidationError(ratelimit.message("upload", wait))
            try:
                services.check_upload(file=cleaned["file"], collection=cleaned["collection"])
            except UploadRejected as error:
                raise forms.ValidationError(str(error)) from error
        return cleaned


class DocumentChangeForm(forms.ModelForm):
    """Moving a document (its chunks follow it: migration 0005) into a collection that holds the same file
    is refused with the message an upload gets, not left to the unique constraint (a 500)."""

    def clean_collection(self):
        collection = self.cleaned_data["collection"]
        same_file = Document.objects.filter(collection=collection, sha256=self.instance.sha256)
        existing = same_file.exclude(pk=self.instance.pk).select_related("collection").first()
        if existing is not None:
            raise forms.ValidationError(str(DuplicateDocument(existing)))
        return collection


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ("title", "collection", "owner", "status_badge", "progress_percent", "chunk_count",
                    "size", "created_at")
    list_filter = ("status", "content_type", "collection", "created_at")
    search_fields = ("title", "original_filename", "sha256", "external_id", "error", "error_detail")
    readonly_fields = ("status", "progress", "chunk_count", "error", "error_detail", "sha256", "size", "content_type",
                       "original_filename", "owner", "created_at", "updated_at", "started_at", "finished_at",
                       "attempts", "queued_at")
    list_select_related = ("collection", "owner")
    actions = ("reingest", "cancel_ingestion")
    date_hierarchy = "created_at"

    form = DocumentChangeForm

    class Media:
        css = {"all": ["css/admin.css"]}

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = type("DocumentAddForm", (DocumentAddForm,), {"request": request})
        return super().get_form(request, obj, **kwargs)

    def add_view(self, request, form_url="", extra_context=None):
        response = super().add_view(request, form_url, extra_context)
        # The form shown again with the rate limit's message: answer 429 with Retry-After, as the API does.
        admin_form = (getattr(response, "context_data", None) or {}).get("adminform")
        retry_after = getattr(admin_form.form, "retry_after", 0) if admin_form is not None else 0
        if retry_after:
            return ratelimit.refused(request, "upload", retry_after, response=response)
        return response

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("collection", "file", "title", "metadata")
        return super().get_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            if "collection" in form.changed_data and services.document_moved(document=obj, actor=request.user):
                self.message_user(
                    request,
                    f"“{obj.title}” is being ingested again: {obj.collection} searches another embedding space "
                    "than the one its vectors were made in. It is found there once that is done.",
                    messages.WARNING,
                )
            return None
        upload = form.cleaned_data["file"]  # already checked by DocumentAddForm.clean
        created = services.document_create(
            owner=request.user, file=upload, collection=form.cleaned_data["collection"],
            filename=upload.name, title=form.cleaned_data.get("title") or None,
            metadata=form.cleaned_data.get("metadata") or {},
        )
        # The service built its own instance; the admin goes on with the form's, so copy it over.
        obj.__dict__.update(created.__dict__)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        # A class, not style="...": the Content-Security-Policy allows no inline styles (static/css/admin.css).
        return format_html('<b class="status-{}">{}</b>{}', obj.status, obj.get_status_display(),
                           format_html("<br><small>{}</small>", obj.error) if obj.error else "")

    @admin.display(description="progress", ordering="progress")
    def progress_percent(self, obj):
        return f"{obj.progress:.0%}"

    @admin.action(description="Re-ingest selected documents", permissions=["change"])
    def reingest(self, request, queryset):
        for document in queryset:
            services.document_reingest(document=document, actor=request.user)
        self.message_user(request, f"{queryset.count()} document(s) queued again.", messages.SUCCESS)

    @admin.action(description="Cancel ingestion of selected documents", permissions=["change"])
    def cancel_ingestion(self, request, queryset):
        cancelled = sum(services.document_cancel(document=document, actor=request.user) for document in queryset)
        finished = queryset.count() - cancelled
        self.message_user(request, f"Cancelled the processing of {cancelled} document(s)."
                          + (f" {finished} had already finished." if finished else ""), messages.SUCCESS)

    # Django's delete page and its "Delete selected" action go through the service too: it removes the
    # stored file (unless another document shares it) and writes the audit trail, as every other delete does.
    def delete_model(self, request, obj):
        services.document_delete(document=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for document in queryset.select_related("collection"):
            services.document_delete(document=document, actor=request.user)


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin):
    list_display = ("__str__", "document", "page", "heading", "token_count")
    list_filter = ("collection",)
    search_fields = ("text", "document__title")
    list_select_related = ("document",)
    readonly_fields = ("document", "collection", "ordinal", "text", "page", "heading", "char_start",
                       "char_end", "token_count", "metadata", "vectors")

    @admin.display(description="vectors")
    def vectors(self, obj):
        """The embedding spaces that hold a vector of this chunk (its collection searches the active one)."""
        rows = (ChunkVector.objects.filter(chunk_id=obj.pk).select_related("space")
                .order_by("space_id").values_list("space__name", "space__dimensions", "distance"))
        return ", ".join(f"{name} ({dimensions}-d, {distance})" for name, dimensions, distance in rows) or "none"

    def has_add_permission(self, request):
        return False


# Embedding spaces and their migrations: their own module (registered on import).
from documents.spaces import admin as spaces_admin  # noqa: E402, F401
