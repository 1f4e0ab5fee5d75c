"""Services that write API tokens: create (the secret returned once) and revoke. The admin, the personal
"API tokens" page and ``manage.py create_api_token`` all go through here."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from core.models import ApiToken

if TYPE_CHECKING:
    from django.contrib.auth.models import User  # AUTH_USER_MODEL: what get_user_model() gives

# How many active tokens one person may hold: enough for every machine and script, not a table to flood.
MAX_ACTIVE_TOKENS = 50
NAME_MAX_LENGTH = ApiToken._meta.get_field("name").max_length or 100


class TokenRefused(ValueError):
    """Why a token was not created, in words for the person who asked."""


def clean_token_name(name: str) -> str:
    """The name as stored: trimmed; refused if too long or with control characters (PostgreSQL text holds no NUL)."""
    name = (name or "").strip()
    if len(name) > NAME_MAX_LENGTH:
        raise TokenRefused(f"A token's name can have at most {NAME_MAX_LENGTH} characters.")
    if re.search(r"[\x00-\x1f\x7f]", name):
        raise TokenRefused("A token's name cannot contain control characters.")
    return name


@transaction.atomic
def token_create(
    *, user: User, name: str = "", actor: AbstractBaseUser | AnonymousUser | None = None
) -> tuple[ApiToken, str]:
    """A new token for ``user`` and its secret, which is returned here once and never stored (only its hash).

    ``actor``, when given, must be ``user`` or a superuser (check_token_issuer)."""
    name = clean_token_name(name)
    if actor is not None:
        check_token_issuer(actor=actor, user=user)
    # Counted under a lock on the user's row: two requests at once cannot both pass the limit.
    list(get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk"))
    check_token_limit(user=user)
    return ApiToken.issue(user=user, name=name, actor=actor)


def check_token_issuer(*, actor: AbstractBaseUser | AnonymousUser, user: User) -> None:
    """TokenRefused unless ``actor`` may issue a token for ``user``: their own, or anyone's for a superuser. A token
    acts as its user everywhere: a staff member allowed to add tokens would otherwise read anyone's documents
    through the API, an administrator's included."""
    if getattr(actor, "is_superuser", False) or actor.pk == user.pk:
        return
    raise TokenRefused(
        f"Only a superuser may issue a token for another account ({user.get_username()}); "
        "sign in as that account to make one."
    )


def check_token_limit(*, user: User) -> None:
    """TokenRefused when ``user`` already holds the most active tokens one may."""
    if ApiToken.objects.filter(user=user, revoked_at__isnull=True).count() >= MAX_ACTIVE_TOKENS:
        raise TokenRefused(
            f"There are already {MAX_ACTIVE_TOKENS} active tokens for {user.get_username()}: "
            "revoke one that is no longer used first."
        )


def token_revoke(*, token: ApiToken, actor: AbstractBaseUser | AnonymousUser | None) -> bool:
    """Revoke ``token`` at once (the next request with it is refused); False if it already was."""
    now = timezone.now()
    revoked = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now) == 1
    if revoked:
        token.revoked_at = now
        audit.record(action="token_revoked", actor=actor, target=token, name=token.name, user=token.user.get_username())
    return revoked
