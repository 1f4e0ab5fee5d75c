"""The audit trail: who uploaded, deleted, re-ingested, created a token, shared a collection or changed something
in the admin."""

from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    class Action(models.TextChoices):
        UPLOAD = "upload", "Upload"
        DELETE = "delete", "Delete"
        REINGEST = "reingest", "Re-ingest"
        CANCEL = "cancel", "Cancel ingestion"
        BULK_DELETE = "bulk_delete", "Bulk delete"
        BULK_REINGEST = "bulk_reingest", "Bulk re-ingest"
        TOKEN_CREATED = "token_created", "API token created"
        TOKEN_REVOKED = "token_revoked", "API token revoked"
        ADMIN_ADD = "admin_add", "Admin: added"
        ADMIN_CHANGE = "admin_change", "Admin: changed"
        ADMIN_DELETE = "admin_delete", "Admin: deleted"
        SIGN_IN = "sign_in", "Signed in"
        SIGN_IN_FAILED = "sign_in_failed", "Sign-in failed"
        SIGN_IN_THROTTLED = "sign_in_throttled", "Sign-in refused: too many failures"
        COLLECTION_CREATED = "collection_created", "Collection created"
        MEMBER_ADDED = "member_added", "Member added to a collection"
        MEMBER_REMOVED = "member_removed", "Member removed from a collection"
        MEMBER_INVITED = "member_invited", "Invited to a collection"
        MEMBER_JOINED = "member_joined", "Invitation accepted: joined a collection"
        INVITATION_DECLINED = "invitation_declined", "Invitation declined"
        INVITATION_WITHDRAWN = "invitation_withdrawn", "Invitation withdrawn"
        SPACE_ADDED = "space_added", "Embedding space added"
        SPACE_MIGRATE = "space_migrate", "Embedding space migration started"
        SPACE_SWITCH = "space_switch", "Embedding space switched"
        SPACE_SWITCH_FORCED = "space_switch_forced", "Embedding space switched past the quality gate"
        SPACE_ROLLBACK = "space_rollback", "Embedding space rolled back"
        SPACE_RETIRE = "space_retire", "Embedding space retired"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True, help_text="Kept when the user is deleted.")
    action = models.CharField(max_length=20, choices=Action.choices)
    object_type = models.CharField(max_length=50, blank=True)
    object_id = models.CharField(max_length=50, blank=True)
    object_repr = models.CharField(max_length=300, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["action", "-created_at"]), models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        who = self.actor_name or "system"
        return f"{self.created_at:%Y-%m-%d %H:%M} {who} {self.get_action_display()} {self.object_repr}"
