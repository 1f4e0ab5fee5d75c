"""Recording audit events. Services call ``record``; the request's address comes from the middleware."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any

from django.db.models import Model
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from audit.models import AuditEvent

logger = logging.getLogger(__name__)
_client_ip: contextvars.ContextVar[str | None] = contextvars.ContextVar("audit_client_ip", default=None)


def record(*, action: str, actor: Any = None, target: Model | None = None, object_type: str = "",
           object_id: object = "", object_repr: str = "", **detail: Any) -> AuditEvent:
    """Write one audit event; ``target`` (a model instance) fills in the object fields."""
    if target is not None:
        object_type = object_type or target._meta.label_lower
        object_id = object_id or target.pk
        object_repr = object_repr or str(target)
    actor = actor if getattr(actor, "is_authenticated", False) else None
    return AuditEvent.objects.create(
        action=action, actor=actor, actor_name=actor.get_username() if actor else "",
        object_type=object_type, object_id=str(object_id or ""), object_repr=str(object_repr)[:300],
        detail=detail, ip=_client_ip.get(),
    )


class AuditContextMiddleware:
    """Remembers the client's address for the events recorded while a request is served."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        token = _client_ip.set(request.META.get("REMOTE_ADDR") or None)
        try:
            return self.get_response(request)
        finally:
            _client_ip.reset(token)
