"""The JSON API (django-ninja), authenticated with bearer tokens; OpenAPI at /api/v1/openapi.json."""

from datetime import timedelta

from django.utils import timezone
from ninja import NinjaAPI
from ninja.security import HttpBearer

from documents.models import ApiToken, hash_token


class BearerToken(HttpBearer):
    """``Authorization: Bearer <token>`` → the token's user (tokens are stored hashed)."""

    def authenticate(self, request, token):
        api_token = (
            ApiToken.objects.active().select_related("user").filter(key_hash=hash_token(token)).first()
        )
        if api_token is None:
            return None
        now = timezone.now()
        if api_token.last_used_at is None or now - api_token.last_used_at > timedelta(minutes=1):
            ApiToken.objects.filter(pk=api_token.pk).update(last_used_at=now)
        request.user = api_token.user
        return api_token.user


api = NinjaAPI(
    title="RAG chat API",
    version="1",
    description="Upload documents, follow their ingestion, and search them. "
    "Authenticate with `Authorization: Bearer <token>` (create one with `python manage.py create_api_token USERNAME`).",
    auth=BearerToken(),
    urls_namespace="api",
)
api.add_router("/documents", "documents.api.router")
api.add_router("/search", "chat.api.router")
