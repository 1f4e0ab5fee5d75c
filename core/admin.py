"""The admin for API tokens (issued once, shown once, revoked in bulk) and the users' search."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import admin as auth_admin
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from core import services
from core.models import ApiToken


class ApiTokenForm(forms.ModelForm):
    """The service's rules (name, the most active tokens one may hold) as form errors, not a failed save."""

    class Meta:
        model = ApiToken
        fields = ("user", "name")

    def clean_name(self) -> str:
        try:
            return services.clean_token_name(self.cleaned_data.get("name", ""))
        except services.TokenRefused as error:
            raise forms.ValidationError(str(error)) from error

    # Who fills the form in: set by ApiTokenAdmin.get_form.
    actor: Any = None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.instance.pk is None and cleaned.get("user") is not None:
            try:
                if self.actor is not None:
                    services.check_token_issuer(actor=self.actor, user=cleaned["user"])
                services.check_token_limit(user=cleaned["user"])
            except services.TokenRefused as error:
                raise forms.ValidationError(str(error)) from error
        return cleaned


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    form = ApiTokenForm
    list_display = ("prefix", "user", "name", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at", "created_at")
    search_fields = ("user__username", "name", "prefix")
    fields = ("user", "name", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    autocomplete_fields = ("user",)
    actions = ("revoke",)

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> tuple[str, ...]:
        return self.readonly_fields + (("user",) if obj else ())

    def get_form(self, request: HttpRequest, obj: ApiToken | None = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"actor": request.user})

    # A staff member who is not a superuser issues tokens for their own account only (core.services.
    # check_token_issuer): the form offers nobody else, and refuses anybody else posted.
    def get_autocomplete_fields(self, request: HttpRequest) -> tuple[str, ...]:
        return tuple(self.autocomplete_fields) if request.user.is_superuser else ()

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "user" and not request.user.is_superuser:
            own = request.user.pk
            assert own is not None  # the admin signs in staff only
            kwargs.update(queryset=get_user_model().objects.filter(pk=own), initial=own,
                          empty_label=None, help_text="Your own account: only a superuser issues tokens for others.")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if change:
            return super().save_model(request, obj, form, change)
        token, raw = services.token_create(user=obj.user, name=obj.name, actor=request.user)
        obj.__dict__.update(token.__dict__)
        # For response_add only (not a field of the model): never stored, never in a message (a cookie) or the session.
        vars(obj)["raw_token"] = raw

    def response_add(self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None) -> HttpResponse:
        """The new token in this response's body, once: not in a message, which travels in a signed but readable
        cookie. The admin's views send Cache-Control: no-store, so no cache keeps the page either."""
        raw = getattr(obj, "raw_token", None)
        if raw is None:
            return super().response_add(request, obj, post_url_continue)
        context = {**self.admin_site.each_context(request), "opts": self.opts, "token": obj, "raw_token": raw,
                   "title": "New API token"}
        return TemplateResponse(request, "admin/core/apitoken/created.html", context)

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        tokens = queryset.filter(revoked_at__isnull=True).select_related("user")
        count = sum(services.token_revoke(token=token, actor=request.user) for token in tokens)
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)


class UserAdmin(auth_admin.UserAdmin):
    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any],
                           search_term: str) -> tuple[QuerySet[Any], bool]:
        # The owner and user pickers above search here through Django's autocomplete view, which passes its
        # term unchecked (the change lists' own search refuses NUL): PostgreSQL text cannot hold NUL.
        return super().get_search_results(request, queryset, search_term.replace("\x00", ""))


admin.site.unregister(get_user_model())
admin.site.register(get_user_model(), UserAdmin)
