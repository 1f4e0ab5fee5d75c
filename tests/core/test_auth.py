"""core/auth.py: the raw-SQL token lookup answers exactly what ``ApiToken.objects.active()`` does."""

import pytest
from django.utils import timezone

from core import auth
from core.models import ApiToken

pytestmark = pytest.mark.django_db


def test_the_sql_lookup_and_the_orm_lookup_agree(user, other_user):
    _, active = ApiToken.issue(user=user)
    revoked_token, revoked = ApiToken.issue(user=user)
    ApiToken.objects.filter(pk=revoked_token.pk).update(revoked_at=timezone.now())
    _, of_inactive = ApiToken.issue(user=other_user)
    other_user.is_active = False
    other_user.save()
    for raw in (active, revoked, of_inactive, "rag_not-a-token", ""):
        sql, orm = auth.active_token_sql(raw), auth.active_token_orm(raw)
        assert (sql is None) == (orm is None), raw
        if sql is not None:
            assert sql[:2] == orm[:2] and sql[2].pk == orm[2].pk and sql[2].username == orm[2].username
    assert auth.active_token_sql(active) is not None and auth.active_token_sql(revoked) is None
    assert auth.active_token_sql(of_inactive) is None
