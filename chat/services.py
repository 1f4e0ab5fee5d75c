"""Answering a question: retrieve permitted passages, prompt, stream, save with citations."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

from django.conf import settings
from django.db import transaction
from django.urls import reverse

from chat import llm as llms
from chat import prompting, retrieval
from chat.models import Citation, Conversation, Message

logger = logging.getLogger(__name__)

NOTHING_FOUND = (
    "I could not find anything about this in the documents you can search. "
    "Try other words, another collection, or upload the document that answers it."
)
CITATION = re.compile(r"\[(\d{1,3})\]")


def cited_indexes(answer: str, available: int) -> list[int]:
    """The passage numbers an answer actually cites, in order of first use."""
    seen: list[int] = []
    for match in CITATION.finditer(answer):
        index = int(match.group(1))
        if 1 <= index <= available and index not in seen:
            seen.append(index)
    return seen


def history_of(conversation: Conversation, *, before: Message | None = None) -> list[dict]:
    messages = conversation.messages.exclude(content="")
    if before is not None:
        messages = messages.filter(id__lt=before.pk)
    return [{"role": m.role, "content": m.content} for m in messages.only("role", "content")]


def standalone_query(*, model, question: str, history: list[dict]) -> str:
    """Rewrite a follow-up into a standalone query with the history (only with a real LLM)."""
    if not history or not isinstance(model, llms.OpenAIChat):
        return question
    try:
        rewritten = model.complete(prompting.build_rewrite_messages(question=question, history=history)).strip()
    except llms.LLMError:
        logger.warning("query rewriting failed; searching with the question as asked")
        return question
    return rewritten[:500] or question


def citation_json(citation: Citation) -> dict:
    return {
        "index": citation.index,
        "document_id": citation.document_id,
        "title": citation.title,
        "page": citation.page,
        "chunk_id": citation.chunk_id,
        "url": reverse("documents:detail", args=[citation.document_id])
        + f"?chunk={citation.chunk_id}#chunk-{citation.chunk_id}",
    }


def answer(
    *, user, question: str, history: list[dict], filters: retrieval.Filters | None = None,
) -> Iterator[dict]:
    """Retrieve, prompt and stream, saving nothing.

    Yields ``{"type": "token", "text"}`` events, then one ``{"type": "result", "content",
    "error", "hits", "cited", "backend"}`` with the passages the answer cites.
    """
    model = llms.get_llm()
    query = standalone_query(model=model, question=question, history=history)
    hits = [
        hit for hit in retrieval.search(user=user, query=query, k=settings.RETRIEVAL_K, filters=filters)
        if hit.relevant
    ]
    parts: list[str] = []
    error = ""
    if not hits:
        parts.append(NOTHING_FOUND)
        yield {"type": "token", "text": NOTHING_FOUND}
    else:
        hits = prompting.fit_hits(hits, int(settings.LLM_CONTEXT_TOKENS * 0.7))
        messages = prompting.build_messages(question=question, history=history, hits=hits)
        try:
            for text in model.stream(messages, hits=hits):
                parts.append(text)
                yield {"type": "token", "text": text}
        except llms.LLMError as failure:
            error = str(failure)
    content = "".join(parts)
    yield {
        "type": "result", "content": content, "error": error, "hits": hits, "backend": model.name,
        "cited": cited_indexes(content, len(hits)),
    }


def ask(
    *, conversation: Conversation, question: str, filters: retrieval.Filters | None = None,
) -> Iterator[dict]:
    """Answer ``question`` in ``conversation``, yielding events as the answer streams.

    Events: ``{"type": "token", "text"}`` … then ``{"type": "done", "message_id", "content",
    "citations", "error"}``. The question is saved first, so a failing model loses nothing.
    """
    question = question.strip()[:4000]
    history = history_of(conversation)
    Message.objects.create(conversation=conversation, role=Message.Role.USER, content=question)
    if not conversation.title:
        conversation.title = question[:80]
    conversation.save(update_fields=["title", "updated_at"])
    if filters is None and conversation.collection_id:
        filters = retrieval.Filters(collections=(conversation.collection_id,))
    result: dict = {}
    for event in answer(user=conversation.owner, question=question, history=history, filters=filters):
        if event["type"] == "token":
            yield event
        else:
            result = event
    hits = result["hits"]
    with transaction.atomic():
        message = Message.objects.create(
            conversation=conversation, role=Message.Role.ASSISTANT, content=result["content"],
            error=result["error"], backend=result["backend"],
        )
        citations = Citation.objects.bulk_create(
            Citation(
                message=message, chunk_id=hits[i - 1].chunk_id, index=i, document_id=hits[i - 1].document_id,
                title=hits[i - 1].document_title[:300], page=hits[i - 1].page,
            )
            for i in result["cited"]
        )
    yield {
        "type": "done", "message_id": message.pk, "content": message.content, "error": message.error,
        "citations": [citation_json(c) for c in citations],
    }
