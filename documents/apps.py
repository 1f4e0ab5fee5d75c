from django.apps import AppConfig


def embeddings_health() -> tuple[object, list[str]]:
    """The embedding backend in use, for the health report (core.health); a fallback or a load failure degrades."""
    from documents.embeddings import active_backend_info

    embeddings = active_backend_info()
    if embeddings["error"]:
        return embeddings, [f"the embedding model cannot be loaded: {embeddings['error']}"]
    if embeddings["fallback"]:
        return embeddings, ["no embedding model could be loaded: search uses the hashing fallback (shared words only)"]
    return embeddings, []


class DocumentsConfig(AppConfig):
    name = "documents"
    verbose_name = "Documents"

    def ready(self):
        from django.conf import settings
        from django.db.models.signals import post_save

        from core import health
        from documents.sharing import forget_invitations_of_the_deactivated

        health.register("embeddings", embeddings_health)
        post_save.connect(
            forget_invitations_of_the_deactivated, sender=settings.AUTH_USER_MODEL, dispatch_uid="documents.invitations"
        )
