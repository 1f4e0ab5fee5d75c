"""The JSON API (django-ninja), authenticated with bearer tokens; OpenAPI at /api/v1/openapi.json."""

from datetime import timedelta
from functools import cache

from django.contrib.auth import get_user_model
from django.core.exceptions import RequestDataTooBig
from django.db import connection
from django.utils import timezone
from ninja import NinjaAPI, Swagger
from ninja.security import HttpBearer

from core.models import ApiToken, hash_token
from ragsite import errors
from ragsite.middleware import DATABASE_ERRORS, REDIS_ERRORS, unavailable_response


@cache
def _token_sql() -> tuple[str, list[str]]:
    """One query for an active token and its user: ``ApiToken.objects.active()``, written out.

    Every API request runs it; building and compiling the ORM queryset cost more than the query itself.
    """
    User = get_user_model()  # noqa: N806
    fields = [field for field in User._meta.concrete_fields]
    columns = ", ".join(f'u."{field.column}"' for field in fields)
    token = ApiToken._meta
    sql = (
        f'SELECT t."{token.pk.column}", t."{token.get_field("last_used_at").column}", {columns} '
        f'FROM "{token.db_table}" t JOIN "{User._meta.db_table}" u ON u."{User._meta.pk.column}" = '
        f't."{token.get_field("user").column}" '
        f'WHERE t."{token.get_field("key_hash").column}" = %s AND t."{token.get_field("revoked_at").column}" IS NULL '
        f'AND u."{User._meta.get_field("is_active").column}"'
    )
    return sql, [field.attname for field in fields]


class BearerToken(HttpBearer):
    """``Authorization: Bearer <token>`` → the token's user (tokens are stored hashed)."""

    def authenticate(self, request, token):
        sql, user_fields = _token_sql()
        with connection.cursor() as cursor:
            cursor.execute(sql, [hash_token(token)])
            row = cursor.fetchone()
        if row is None:
            return None
        token_id, last_used_at, *user_values = row
        now = timezone.now()
        if last_used_at is None or now - last_used_at > timedelta(minutes=1):
            ApiToken.objects.filter(pk=token_id).update(last_used_at=now)
        user = get_user_model().from_db(connection.alias, user_fields, user_values)
        request.user = user
        return user


api = NinjaAPI(
    title="RAG chat API",
    version="1",
    description="Upload documents, follow their ingestion, and search them. "
    "Authenticate with `Authorization: Bearer <token>` (create one with `python manage.py create_api_token USERNAME`).",
    auth=BearerToken(),
    urls_namespace="api",
    # Swagger UI from ninja's own static files ("ninja" in INSTALLED_APPS), without its online validator's
    # badge (an image from validator.swagger.io): the docs work offline and under the CSP.
    docs=Swagger(settings={"validatorUrl": None}),
)
api.add_router("/documents", "documents.api.router")
api.add_router("/search", "chat.api.router")

# An outage of the database or Redis is a clear 503 here too (django-ninja handles the API's exceptions
# itself, before ragsite.middleware would see them when DEBUG is on).
for _error in (*DATABASE_ERRORS, *REDIS_ERRORS):
    api.add_exception_handler(_error, unavailable_response)
api.add_exception_handler(RequestDataTooBig, errors.too_big_response)
