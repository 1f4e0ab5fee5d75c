"""API tokens: the bearer credentials of the JSON and OpenAI-compatible APIs."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import models

from audit.services import record


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def active(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True, user__is_active=True)


class ApiToken(models.Model):
    """A bearer token for the JSON and OpenAI-compatible APIs, stored only as a hash."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=12, help_text="The first characters, to tell tokens apart.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        db_table = "documents_apitoken"  # created by documents' migrations, before the model moved here
        ordering = ["-created_at"]
        verbose_name = "API token"  # not Django's "api token", capitalised "Api tokens" in the admin

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @classmethod
    def issue(cls, *, user: AbstractBaseUser, name: str = "",
              actor: AbstractBaseUser | AnonymousUser | None = None) -> tuple[ApiToken, str]:
        """Create a token; the raw value is returned once and never stored."""
        raw = "rag_" + secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, prefix=raw[:10], key_hash=hash_token(raw))
        record(action="token_created", actor=actor or user, target=token, name=name, user=user.get_username())
        return token, raw
