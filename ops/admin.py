"""The recall history in the admin, read-only (the nightly sample writes it)."""

from django.contrib import admin
from django.http import HttpRequest

from ops.models import RecallSample


@admin.register(RecallSample)
class RecallSampleAdmin(admin.ModelAdmin):
    list_display = ("taken_at", "space", "distance", "mean", "p10", "minimum", "queries", "k", "ef_search")
    list_filter = ("space", "distance")
    date_hierarchy = "taken_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
