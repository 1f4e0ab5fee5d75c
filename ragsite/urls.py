from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from chat.openai_api import api as openai_api
from ragsite import signin
from ragsite.api import api
from ragsite.views import healthz, readyz

handler400 = "ragsite.errors.bad_request"  # RequestDataTooBig: 413 with the limit

admin.site.site_header = "RAG chat administration"
admin.site.site_title = "RAG chat admin"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="documents:list", permanent=False)),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    # Sign-in, sign-out and password change; no password reset by e-mail (no mail is configured):
    # administrators reset passwords in the admin or with `manage.py changepassword`.
    # Both sign-in forms count failures per account and per address (ragsite.signin).
    path("accounts/login/", signin.throttled(auth_views.LoginView.as_view()), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("accounts/password_change/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("documents/", include("documents.urls")),
    path("chat/", include("chat.urls")),
    path("api/v1/", api.urls),
    path("v1/", openai_api.urls),
    path("admin/login/", signin.throttled(admin.site.login)),  # before the admin's own, which it shadows
    path("admin/", admin.site.urls),
]
