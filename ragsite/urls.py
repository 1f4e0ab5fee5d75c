from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.core.exceptions import RequestDataTooBig
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from ninja import NinjaAPI, Swagger

from chat.openai_api import api as openai_api
from core import http, signin
from core.auth import BearerToken
from core.health import healthz, readyz
from ops.views import db_health

handler400 = "core.http.bad_request"  # RequestDataTooBig: 413 with the limit

admin.site.site_header = "RAG chat administration"
admin.site.site_title = "RAG chat admin"

# The JSON API (django-ninja), authenticated with bearer tokens; OpenAPI at /api/v1/openapi.json.
api = NinjaAPI(
    title="RAG chat API",
    version="1",
    description="Upload documents, follow their ingestion, and search them. "
    "Authenticate with `Authorization: Bearer <token>` (create one on the API tokens page, /accounts/tokens/, "
    "or with `python manage.py create_api_token USERNAME`).",
    auth=BearerToken(),
    urls_namespace="api",
    # Swagger UI from ninja's own static files ("ninja" in INSTALLED_APPS), without its online validator's
    # badge (an image from validator.swagger.io): the docs work offline and under the CSP.
    docs=Swagger(settings={"validatorUrl": None}),
)
api.add_router("/documents", "documents.api.router")
api.add_router("/search", "documents.search.api.router")
api.add_router("/collections", "documents.collection_api.router")
api.add_router("/invitations", "documents.collection_api.invitations_router")
api.add_router("/documents", "documents.similar_api.documents_router")
api.add_router("/chunks", "documents.similar_api.chunks_router")
api.add_router("/recommendations", "documents.similar_api.recommendations_router")
api.add_router("/embedding-spaces", "documents.spaces.api.spaces_router")  # staff only
api.add_router("/collections", "documents.spaces.api.collections_router")  # /{id}/embedding-space/...
# An outage of the database or Redis is a clear 503 here too (django-ninja handles the API's exceptions
# itself, before core.http.DatabaseUnavailableMiddleware would see them when DEBUG is on).
for _error in (*http.DATABASE_ERRORS, *http.REDIS_ERRORS):
    # ignore: ninja types a handler as taking the exception or its class and never returning None; it is
    # given the instance, and answers (not None) for the classes it is registered for.
    api.add_exception_handler(_error, http.unavailable_response)  # type: ignore[arg-type]
api.add_exception_handler(RequestDataTooBig, http.too_big_response)  # type: ignore[arg-type]  # same stub gap

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="documents:list", permanent=False)),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    # What a browser asks for by itself on pages without an icon of their own (the admin's): not a 404 in every log.
    path("favicon.ico", RedirectView.as_view(url=static("favicon.svg"), permanent=True)),
    # Sign-in, sign-out and password change; no password reset by e-mail (no mail is configured):
    # administrators reset passwords in the admin or with `manage.py changepassword`.
    # Both sign-in forms count failures per account and per address (core.signin).
    path("accounts/login/", signin.throttled(auth_views.LoginView.as_view()), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("accounts/password_change/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("documents/", include("documents.urls")),
    path("chat/", include("chat.urls")),
    path("collections/", include("documents.collection_urls")),
    path("accounts/tokens/", include("core.urls")),
    path("api/v1/", api.urls),
    path("v1/", openai_api.urls),
    path("admin/login/", signin.throttled(admin.site.login)),  # before the admin's own, which it shadows
    path("admin/db-health/", admin.site.admin_view(db_health), name="db_health"),  # staff only
    path("admin/", admin.site.urls),
]
