"""A user's conversations as things to manage: find, rename, search, export, delete.

Every entry point takes the conversation through ``conversation_for_user`` first: a conversation is
its owner's alone, and anyone else's id is "not found" (404), never "forbidden".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.http import Http404
from django.utils import timezone
from django.utils.text import slugify

from chat.citations import labels
from chat.models import Citation, Conversation, Message

TITLE_MAX_LENGTH = Conversation._meta.get_field("title").max_length or 200
QUERY_MAX_LENGTH = 200
QUERY_MAX_WORDS = 8
SNIPPET_AROUND = 40  # characters shown each side of a match in the list


class ConversationError(ValueError):
    """Bad input about a conversation; the message is for the user."""


def conversation_for_user(user: Any, pk: int) -> Conversation:
    """The user's own conversation ``pk``, or 404."""
    conversation = Conversation.objects.filter(owner=user, pk=pk).select_related("collection__owner").first()
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def conversations_for_user(*, user: Any, query: str = "") -> QuerySet[Conversation]:
    """The user's conversations, newest first; with ``query``, those where each of its words appears, in
    the title or in any message.

    Case-insensitive substrings (ILIKE), not full-text search: people look for a word they remember,
    often a name, a code or part of a word, which stemming and stop words would miss. The scan stays
    within one user's messages: 25 ms for a rare word among 4,000 messages, where full-text search
    computed on the fly takes 260 ms and finds no part of a word (bench/conversation_search.py).
    """
    conversations = Conversation.objects.filter(owner=user)
    for word in clean_query(query).split()[:QUERY_MAX_WORDS]:
        in_messages = Message.objects.filter(conversation=OuterRef("pk"), content__icontains=word)
        conversations = conversations.filter(Q(title__icontains=word) | Exists(in_messages))
    return conversations


@dataclass(frozen=True)
class Listed:
    """A conversation as the sidebar lists it."""

    pk: int
    title: str
    snippet: str  # with a search: the text around the match in its first matching message, if any


def conversations_listed(*, user: Any, query: str = "", limit: int) -> list[Listed]:
    """The sidebar's list, newest first; with ``query``, the matches, each with the words around the
    first query word in its first message that has it (none when only the title matched)."""
    listed = conversations_for_user(user=user, query=query)
    words = clean_query(query).split()
    if not words:
        return [Listed(pk, title, "") for pk, title in listed.values_list("pk", "title")[:limit]]
    first_match = Message.objects.filter(conversation=OuterRef("pk"), content__icontains=words[0])
    listed = listed.annotate(matched=Subquery(first_match.order_by("created_at", "id").values("content")[:1]))
    return [
        Listed(pk, title, snippet(matched or "", words[0]))
        for pk, title, matched in listed.values_list("pk", "title", "matched")[:limit]
    ]


def snippet(text: str, word: str, *, around: int = SNIPPET_AROUND) -> str:
    """One line of ``text`` around the first ``word`` (any case), with … where it was cut."""
    at = text.lower().find(word.lower())
    if at < 0:
        return ""
    start, end = max(0, at - around), min(len(text), at + len(word) + around)
    return ("…" if start else "") + _one_line(text[start:end]) + ("…" if end < len(text) else "")


def clean_query(query: str) -> str:
    return " ".join(query.split())[:QUERY_MAX_LENGTH]


def clean_title(title: str) -> str:
    """A title as it is stored: one line, spaces collapsed; ``ConversationError`` when unusable."""
    title = " ".join("".join(c if c.isprintable() else " " for c in title).split())
    if not title:
        raise ConversationError("Type a title first.")
    if len(title) > TITLE_MAX_LENGTH:
        raise ConversationError(f"A title is at most {TITLE_MAX_LENGTH} characters ({len(title)} given).")
    return title


def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    conversation.title = clean_title(title)
    conversation.save(update_fields=["title", "updated_at"])
    return conversation


def conversations_delete(*, user: Any, ids: Iterable[int]) -> int:
    """Delete those of ``ids`` the user owns (others' ids are ignored); how many were deleted."""
    ids = list(ids)
    if not ids:
        return 0
    deleted, by_model = Conversation.objects.filter(owner=user, pk__in=ids).delete()
    return by_model.get(Conversation._meta.label, 0)


def export_filename(conversation: Conversation) -> str:
    return f"{slugify(conversation.title)[:60] or f'conversation-{conversation.pk}'}.md"


def conversation_markdown(conversation: Conversation) -> str:
    """The conversation as a Markdown document: each question, its answer, and the sources it cites."""
    messages = conversation.messages.prefetch_related(
        Prefetch(
            "citation_set",
            queryset=Citation.objects.select_related("chunk")
            .only("message_id", "index", "title", "page", "heading", "passage", "passages", "document_id",
                  "chunk__heading")
            .order_by("index"),
        )
    )
    scope = conversation.collection.name if conversation.collection else "all collections"
    lines = [
        f"# {_one_line(conversation.title) or 'New conversation'}",
        "",
        f"Asked in {scope}; exported {timezone.localtime():%Y-%m-%d %H:%M %Z}.",
    ]
    for message in messages:
        lines.append("")
        if message.role == Message.Role.USER:
            lines += ["## Question", "", *(f"> {line}".rstrip() for line in message.content.splitlines())]
            continue
        answer = [message.content.strip()] if message.content.strip() else []
        if message.error:
            answer.append(f"*No answer: {_one_line(message.error)}*")
        lines += ["### Answer", "", "\n\n".join(answer)]
        citations = list(message.citation_set.all())
        if citations:
            lines += ["", "Sources:", ""]
            lines += [f"{c.index}. {_source(c, text)}" for c, text in zip(citations, labels(citations), strict=True)]
    return "\n".join(lines) + "\n"


def _source(citation: Citation, label: str) -> str:
    """The citation as the page labels it (``chat.citations.labels``), with the section a page label leaves out."""
    if citation.chunk is None:
        return f"{_one_line(label)} (passage since deleted)"
    heading = citation.heading or citation.chunk.heading
    if citation.page and heading:
        return f"{_one_line(label)}, section “{_one_line(heading)}”"
    return _one_line(label)


def _one_line(text: str) -> str:
    return " ".join(text.split())
