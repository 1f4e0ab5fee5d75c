"""Admin actions (Django's LogEntry) and sign-ins land in the same audit trail."""

from typing import Any

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db.models.signals import post_save
from django.dispatch import receiver

from audit.models import AuditEvent
from audit.services import record

ADMIN_ACTIONS = {ADDITION: AuditEvent.Action.ADMIN_ADD, CHANGE: AuditEvent.Action.ADMIN_CHANGE,
                 DELETION: AuditEvent.Action.ADMIN_DELETE}


@receiver(post_save, sender=LogEntry)
def admin_action(sender: type[LogEntry], instance: LogEntry, created: bool, **kwargs: Any) -> None:
    if created:
        record(
            action=ADMIN_ACTIONS.get(instance.action_flag, AuditEvent.Action.ADMIN_CHANGE), actor=instance.user,
            object_type=instance.content_type.model if instance.content_type else "",
            object_id=instance.object_id or "", object_repr=instance.object_repr,
            change=instance.get_change_message(),
        )


@receiver(user_logged_in)
def signed_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    record(action=AuditEvent.Action.SIGN_IN, actor=user, target=user)


@receiver(user_login_failed)
def sign_in_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    record(action=AuditEvent.Action.SIGN_IN_FAILED, object_type="auth.user",
           object_repr=str(credentials.get("username", ""))[:150])
