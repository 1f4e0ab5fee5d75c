"""Conversations and their messages; an answer keeps the chunks it cites."""

from django.conf import settings
from django.db import models

from documents.models import Chunk, Collection


class Conversation(models.Model):
    # Indexed by (owner, -updated_at) below, as documents.models.Collection.owner is by its unique constraint.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations", db_index=False
    )
    title = models.CharField(max_length=200, blank=True)
    collection = models.ForeignKey(
        Collection, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Ask only this collection (empty: every collection the owner may read).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["owner", "-updated_at"])]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    # The error of an answer the reader stopped (chat.citations.stop); the partial answer is kept.
    STOPPED = "Stopped: the answer was cut short."

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=20, choices=Role.choices)
    content = models.TextField()
    error = models.TextField(blank=True, help_text="Why the answer failed, if it did.")
    backend = models.CharField(max_length=100, blank=True, help_text="What produced the answer.")
    citations = models.ManyToManyField(Chunk, through="Citation", related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:60]}"

    @property
    def stopped(self) -> bool:
        """Whether the reader stopped this answer (its text is what had arrived before)."""
        return self.error == self.STOPPED


class Citation(models.Model):
    """Passage [index] of an answer. The chunk may be deleted later; the citation then dangles."""

    # Indexed by unique_citation_index (message, index).
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="citation_set", db_index=False)
    chunk = models.ForeignKey(Chunk, null=True, on_delete=models.SET_NULL, related_name="+")
    index = models.PositiveIntegerField()
    document_id = models.BigIntegerField()
    title = models.CharField(max_length=300)
    page = models.PositiveIntegerField(null=True, blank=True)
    # Where the passage is when it has no page (chat.citations.label): its heading path, else its place.
    heading = models.TextField(blank=True)
    passage = models.PositiveIntegerField(null=True, blank=True, help_text="The chunk's place in its document, from 1.")
    passages = models.PositiveIntegerField(null=True, blank=True, help_text="How many chunks its document had.")

    class Meta:
        ordering = ["message", "index"]
        constraints = [models.UniqueConstraint(fields=["message", "index"], name="unique_citation_index")]

    def __str__(self) -> str:
        return f"[{self.index}] {self.title}"
