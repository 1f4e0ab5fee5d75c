"""The admin's database health page (staff only: wrapped in admin.site.admin_view by ragsite.urls)."""

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse

from ops import dbhealth


def db_health(request: HttpRequest) -> TemplateResponse:
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
