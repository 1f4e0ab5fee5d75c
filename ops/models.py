"""The history of the nightly recall sample (ops.recall): one row per embedding space, distance and run."""

from __future__ import annotations

from django.db import models


class RecallSampleQuerySet(models.QuerySet["RecallSample"]):
    def latest_by_distance(self) -> list[RecallSample]:
        """The newest sample of each embedding space and distance (spaces in order, then distances)."""
        return list(
            self.select_related("space").order_by("space_id", "distance", "-taken_at").distinct("space_id", "distance")
        )


class RecallSample(models.Model):
    """How many of the exact top-k neighbours the HNSW index found, over stored chunks used as queries."""

    taken_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # The embedding space whose index was measured (empty: a sample from before spaces, of the chunk table).
    space = models.ForeignKey(
        "documents.EmbeddingSpace", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    distance = models.CharField(max_length=6)  # documents.models.Distance
    queries = models.PositiveIntegerField()
    k = models.PositiveSmallIntegerField()
    ef_search = models.PositiveIntegerField()
    mean = models.FloatField()
    p10 = models.FloatField(help_text="The 10th percentile: nine queries in ten found at least this share.")
    minimum = models.FloatField()

    objects = RecallSampleQuerySet.as_manager()

    class Meta:
        ordering = ["-taken_at", "distance"]
        # The database health page (ops.views): it shows the text of running statements, which may hold what users
        # typed or uploaded, so not every staff member sees it.
        permissions = [("view_database_health", "Can view the database health page")]
        constraints = [
            models.CheckConstraint(condition=models.Q(mean__gte=0, mean__lte=1), name="recall_mean_is_a_share"),
        ]

    def __str__(self) -> str:
        return f"{self.index} recall@{self.k} {self.mean:.3f} ({self.taken_at:%Y-%m-%d %H:%M})"

    @property
    def index(self) -> str:
        """What was measured, as people read it: the space's name and the distance."""
        return f"{self.space.name if self.space else 'chunks'} {self.distance}"
