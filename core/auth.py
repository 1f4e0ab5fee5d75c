"""Bearer tokens for the APIs: ``Authorization: Bearer <token>`` → the token's user (tokens are stored hashed)."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.db import connection
from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer

from core.db import server_bound_cursor
from core.models import ApiToken, hash_token

if TYPE_CHECKING:
    from django.contrib.auth.models import User  # AUTH_USER_MODEL: what get_user_model() gives

# A token's last use is written at most this often: not one UPDATE per request.
LAST_USED_EVERY = timedelta(minutes=1)

# (token id, when it was last used, its user)
TokenMatch = tuple[int, datetime | None, "User"]


@cache
def _token_sql() -> tuple[str, list[str]]:
    """One query for an active token and its user: ``ApiToken.objects.active().select_related("user")``,
    written out."""
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


def active_token_sql(raw: str) -> TokenMatch | None:
    """(token id, last used, user) of the active token ``raw``, or None: the query written out."""
    sql, user_fields = _token_sql()
    with server_bound_cursor(connection) as cursor:  # prepared once per connection
        cursor.execute(sql, [hash_token(raw)])
        row = cursor.fetchone()
    if row is None:
        return None
    token_id, last_used_at, *user_values = row
    return token_id, last_used_at, get_user_model().from_db(connection.alias, user_fields, user_values)


def active_token_orm(raw: str) -> TokenMatch | None:
    """(token id, last used, user) of the active token ``raw``, or None: the ORM's query (what the SQL must equal)."""
    try:
        token = ApiToken.objects.active().select_related("user").get(key_hash=hash_token(raw))
    except ApiToken.DoesNotExist:
        return None
    return token.pk, token.last_used_at, token.user


# The raw SQL: a lookup at p50 1.3 ms against 7.7 ms for the ORM's, every API request (bench/token_lookup.py).
active_token = active_token_sql


class BearerToken(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> User | None:
        found = active_token(token)
        if found is None:
            return None
        token_id, last_used_at, user = found
        now = timezone.now()
        if last_used_at is None or now - last_used_at > LAST_USED_EVERY:
            ApiToken.objects.filter(pk=token_id).update(last_used_at=now)
        request.user = user
        return user
