"""Read queries for API tokens: a person's own, and the one access rule for a token's id."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404

from core.models import ApiToken, ApiTokenQuerySet


def tokens_for_user(*, user: Any) -> ApiTokenQuerySet:
    """``user``'s tokens that still work, newest first (revoked ones are in the audit trail)."""
    return ApiToken.objects.filter(user=user, revoked_at__isnull=True).order_by("-created_at", "-id")


def token_for_user(user: Any, pk: int) -> ApiToken:
    """``user``'s own active token ``pk``; else Http404 (another person's token is not found, never forbidden)."""
    return get_object_or_404(tokens_for_user(user=user).select_related("user"), pk=pk)
