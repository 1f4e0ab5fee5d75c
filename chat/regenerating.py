"""Ask the last question again: the conversation's last question and what answered it make way for a new answer."""

from __future__ import annotations

from chat.models import Conversation, Message


def last_question(conversation: Conversation) -> Message | None:
    return conversation.messages.filter(role=Message.Role.USER).order_by("-id").only("id", "content").first()


def take_back(conversation: Conversation, question: Message) -> None:
    """Delete ``question`` and every message after it (its answer, a stopped or failed one included).

    ``chat.services.ask`` saves the question again, first: a new answer that fails still leaves it asked.
    """
    conversation.messages.filter(id__gte=question.pk).delete()
