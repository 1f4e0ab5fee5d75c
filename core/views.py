"""The personal "API tokens" page: every signed-in person creates (the secret shown once), lists and revokes
their own tokens."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from core import services
from core.selectors import token_for_user, tokens_for_user


class TokenCreateForm(forms.Form):
    name = forms.CharField(
        max_length=services.NAME_MAX_LENGTH,
        help_text="What it is for, to tell your tokens apart (e.g. “laptop scripts”).",
        error_messages={"required": "Give the token a name, to tell your tokens apart."},
    )

    def clean_name(self) -> str:
        try:
            return services.clean_token_name(self.cleaned_data["name"])
        except services.TokenRefused as error:
            raise forms.ValidationError(str(error)) from error


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """GET: the caller's tokens and the form. POST: create one, and show its secret in this response only."""
    user = request.user
    assert user.is_authenticated  # login_required
    form = TokenCreateForm(request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        try:
            token, raw = services.token_create(user=user, name=form.cleaned_data["name"], actor=user)
        except services.TokenRefused as error:
            form.add_error(None, str(error))
        else:
            # The secret travels in this body only: not in a message (a cookie), the session or a redirect.
            return render(request, "account/token_created.html", {"token": token, "raw_token": raw}, status=201)
    status = 400 if form.is_bound else 200
    tokens = tokens_for_user(user=request.user)
    return render(request, "account/tokens.html", {"form": form, "tokens": tokens}, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: ask to confirm. POST: revoke the caller's own token ``pk`` (another's is not found)."""
    token = token_for_user(request.user, pk)
    if request.method == "GET":
        return render(request, "account/token_revoke.html", {"token": token})
    services.token_revoke(token=token, actor=request.user)
    messages.success(request, f"Revoked the token “{token.name or token.prefix}”: it no longer works.")
    return redirect("tokens:list")
