"""Ask the last question again ("regenerate"): chat.services.ask replaces its answer once a new one succeeds."""

from __future__ import annotations

from chat.models import Conversation, Message


def last_question(conversation: Conversation) -> Message | None:
    return conversation.messages.filter(role=Message.Role.USER).order_by("-id").only("id", "content").first()

