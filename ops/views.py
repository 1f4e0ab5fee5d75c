"""The admin's database health page: staff (admin.site.admin_view, in ragsite.urls) with the permission
``ops.view_database_health`` (superusers have it): it shows running statements' text, which may hold user content."""

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse

from ops import dbhealth

PERMISSION = "ops.view_database_health"


def db_health(request: HttpRequest) -> TemplateResponse:
    if not request.user.has_perm(PERMISSION):
        raise PermissionDenied("This page needs the permission “Can view the database health page”.")
    context = {
        **admin.site.each_context(request),
        "title": "Database health",
        "report": dbhealth.report(),
        "settings_used": {
            "DB_HEALTH_LONG_QUERY_SECONDS": settings.DB_HEALTH_LONG_QUERY_SECONDS,
            "DB_HEALTH_IDLE_IN_TRANSACTION_SECONDS": settings.DB_HEALTH_IDLE_IN_TRANSACTION_SECONDS,
            "RECALL_FLOOR": settings.RECALL_FLOOR,
        },
    }
    return TemplateResponse(request, "admin/ops/db_health.html", context)
