from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from chat.openai_api import api as openai_api
from ragsite.api import api
from ragsite.views import healthz

admin.site.site_header = "RAG chat administration"
admin.site.site_title = "RAG chat admin"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="documents:list", permanent=False)),
    path("healthz", healthz, name="healthz"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("documents/", include("documents.urls")),
    path("chat/", include("chat.urls")),
    path("api/v1/", api.urls),
    path("v1/", openai_api.urls),
    path("admin/", admin.site.urls),
]
