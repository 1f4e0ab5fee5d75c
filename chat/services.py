"""Answering a question: retrieve permitted passages, prompt, stream, save with citations."""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

from django.conf import settings
from django.db import connection, transaction
from django.urls import reverse

from chat import citations, extractive, followups, prompting
from chat import llm as llms
from chat.models import Citation, Conversation, Message
from chat.prompting import Turn
from core.text import without_surrogates
from documents import search as retrieval
from documents.exceptions import EmbeddingError
from documents.models import Interest
from documents.parsing import CONTROL
from documents.recommend import interest_record

logger = logging.getLogger(__name__)

# One sentence, no citations, no note about quoting: nothing is quoted (chat.extractive.is_relevant).
NOTHING_FOUND = (
    "I could not find anything about this in the documents you can search: try other words, another "
    "collection, or upload the document that answers it."
)
# The chat form's maxlength; both chat endpoints refuse longer questions (question_too_long).
QUESTION_MAX_CHARACTERS = 4000
# Without citations, the documents of this many best passages note what a question was about (recommendations).
ASKED_INTEREST = 3
CITATION = prompting.CITATION


class CitationData(TypedDict):
    """A saved citation as the page's script and the JSON API read it."""

    index: int
    document_id: int
    title: str
    page: int | None
    chunk_id: int | None
    url: str
    label: str  # where the passage is: "Title, page 4", "Title › Heading", "Title, passage 3 of 12"


class Token(TypedDict):
    """A piece of the answer's text, as it streams."""

    type: Literal["token"]
    text: str


class Result(TypedDict):
    """The end of ``answer()``: the whole text and the passages it was given and cites (1-based)."""

    type: Literal["result"]
    content: str
    error: str
    hits: list[retrieval.Hit]
    cited: list[int]
    backend: str
    # False when the relevance gate found nothing relevant: then ``content`` is NOTHING_FOUND, no passage.
    found: bool
    # The language model's tokens (chat.llm.Usage: ``totals()`` counts what its server did not report).
    usage: llms.Usage


class Done(TypedDict):
    """The end of ``ask()``: the saved answer and its citations (``html``/``title``: added by the page)."""

    type: Literal["done"]
    message_id: int
    content: str
    error: str
    citations: list[CitationData]
    html: NotRequired[str]
    title: NotRequired[str]


AnswerEvent = Token | Result
AskEvent = Token | Done


def clean_question(text: str) -> str:
    """A question without control characters (PostgreSQL text cannot hold NUL; the others are noise)
    and without lone surrogates (``"\\ud800"`` in a JSON body: UTF-8 cannot encode them).

    Forms send line breaks as CRLF: they count as one character, as in the form's maxlength.
    """
    return without_surrogates(CONTROL.sub("", (text or "").replace("\r\n", "\n"))).strip()


def question_too_long(question: str) -> str:
    """Why ``question`` is refused for its length, or "" when it is not."""
    if len(question) <= QUESTION_MAX_CHARACTERS:
        return ""
    return (f"The question is {len(question):,} characters long; the limit is {QUESTION_MAX_CHARACTERS:,}. "
            "Ask a shorter question, or upload the long text as a document.")


def cited_indexes(answer: str, available: int) -> list[int]:
    """The passage numbers an answer actually cites, in order of first use."""
    seen: list[int] = []
    for match in CITATION.finditer(answer):
        for number in match.group(1).split(","):
            index = int(number)
            if 1 <= index <= available and index not in seen:
                seen.append(index)
    return seen


def release_connection() -> None:
    """Hand this thread's database connection back while a language model answers.

    An answer streams for seconds; a connection held all that time caps simultaneous chats at the
    pool's size (``DATABASE_POOL_MAX_SIZE``) and PostgreSQL's ``max_connections``. With the pool,
    ``close()`` returns the connection to it, and the next query takes one again (to save the
    answer). Inside a transaction the connection must stay: then this does nothing.
    """
    if not connection.in_atomic_block:
        connection.close()


def history_of(conversation: Conversation, *, before: Message | None = None) -> list[Turn]:
    messages = conversation.messages.exclude(content="")
    if before is not None:
        messages = messages.filter(id__lt=before.pk)
    return [{"role": m.role, "content": m.content} for m in messages.only("role", "content")]


@dataclass(frozen=True)
class Search:
    """What retrieval is asked for a question: the query, and the subject a follow-up carries ("" if none)."""

    query: str
    subject: str = ""


def standalone_query(
    *, model: llms.OpenAIChat | llms.Extractive, question: str, history: list[Turn],
    usage: llms.Usage | None = None,
) -> Search:
    """The search for ``question``: as asked, unless it is a follow-up (chat.followups).

    A follow-up is rewritten into a standalone query by the language model when there is one (a model
    call: only for follow-ups, so that a question that stands on its own costs none before the gate);
    without one, or when the rewrite fails, it is searched with the conversation's subject.
    """
    carried = followups.follow_up(question, history) if history else None
    if carried is None:
        return Search(question)
    if isinstance(model, llms.OpenAIChat):
        release_connection()  # the rewrite is a model call too
        try:
            rewritten = model.complete(
                prompting.build_rewrite_messages(question=question, history=history), usage=usage,
            )
            rewritten = rewritten.strip().strip('"').strip()[:500]  # models like to quote the query
        except llms.LLMError:
            logger.warning("query rewriting failed; searching with the conversation's subject")
        else:
            if rewritten:
                return Search(rewritten)
    return Search(carried.query, carried.subject)


def citation_json(citation: Citation, label: str | None = None) -> CitationData:
    """A citation for the page's script and the API; ``label`` when the caller has its answer's (``labels``)."""
    url = reverse("documents:detail", args=[citation.document_id])
    if citation.chunk_id is not None:
        url += f"?chunk={citation.chunk_id}#chunk-{citation.chunk_id}"
    return {
        "index": citation.index,
        "document_id": citation.document_id,
        "title": citation.title,
        "page": citation.page,
        "chunk_id": citation.chunk_id,
        "url": url,
        "label": citations.label_of(citation) if label is None else label,
    }


def _relevant_hits(*, user: Any, search: Search, filters: retrieval.Filters | None) -> list[retrieval.Hit]:
    """The passages found for ``search`` past the relevance gate (chat.extractive.is_relevant): those a signal marks
    as about the query, at least the best one; none when the gate closes."""
    hits = retrieval.search(user=user, query=search.query, k=settings.RETRIEVAL_K, filters=filters)
    if not extractive.is_relevant(search.query, hits):
        return []
    return [hit for hit in hits if hit.relevant] or hits[:1]


def answer(
    *, user: Any, question: str, history: list[Turn], filters: retrieval.Filters | None = None,
) -> Generator[AnswerEvent, None, None]:
    """Retrieve, prompt and stream, saving nothing: ``Token`` events, then one ``Result``.

    When the passages found are not about the question (chat.extractive.is_relevant), the answer is
    NOTHING_FOUND, without passages and without asking the model.
    """
    model = llms.get_llm()
    usage = llms.Usage()
    search = standalone_query(model=model, question=question, history=history, usage=usage)
    parts: list[str] = []
    error = ""
    hits: list[retrieval.Hit] = []
    try:
        hits = _relevant_hits(user=user, search=search, filters=filters)
        if search.subject:  # a follow-up searched with its subject: not the passages of other subjects
            hits = followups.on_subject(hits, search.subject)
            if followups.changes_subject(question, hits):  # "what about <something else>?"
                hits = _relevant_hits(user=user, search=Search(question), filters=filters)
    except EmbeddingError as failure:  # the query could not be embedded: say so rather than guess
        logger.warning("retrieval failed: %s (%s)", failure, failure.detail)
        error = f"The documents could not be searched: {failure}"
    if not hits and not error:
        parts.append(NOTHING_FOUND)
        yield Token(type="token", text=NOTHING_FOUND)
    elif hits:
        if model.remote:
            release_connection()  # the database's part is done until the answer is saved
        # The passages the model sees, so that citation numbers refer to them.
        hits = prompting.fit_hits(hits, prompting.passages_budget())
        messages = prompting.build_messages(question=question, history=history, hits=hits)
        try:
            for text in model.stream(messages, hits=hits, usage=usage):
                parts.append(text)
                yield Token(type="token", text=text)
        except llms.LLMError as failure:
            error = str(failure)
    content = "".join(parts)
    yield Result(
        type="result", content=content, error=error, hits=hits, backend=model.name,
        cited=cited_indexes(content, len(hits)), found=bool(hits),
        usage=usage,
    )


def note_interest(*, user: Any, result: Result, cited: list[int] | None = None) -> None:
    """What answered a question says what its asker was reading about (recommendations): the cited documents
    (``cited``: as saved; by default those of the result's citations), else the best retrieved ones. Both chat
    endpoints call it once the answer is complete: the page's ``ask`` and /v1/chat/completions."""
    hits = result["hits"]
    if cited is None:
        cited = [hits[i - 1].document_id for i in result["cited"] if 0 < i <= len(hits)]
    read = cited or [hit.document_id for hit in hits[:ASKED_INTEREST]]
    interest_record(user=user, kind=Interest.Kind.ASKED, document_ids=read)


def ask(
    *, conversation: Conversation, question: str, filters: retrieval.Filters | None = None,
    again: Message | None = None,
) -> Generator[AskEvent, None, None]:
    """Answer ``question`` in ``conversation``: ``Token`` events as the answer streams, then ``Done``.

    The question is saved first, so a failing model loses nothing. ``again``: the conversation's last question,
    asked again ("regenerate"): the history stops before it, and only a new answer that succeeds replaces what
    answered it (in the transaction that saves it); a failed or stopped one is kept beside the old answer.
    """
    question = clean_question(question)[:QUESTION_MAX_CHARACTERS]
    history = history_of(conversation, before=again)
    if again is None:
        with transaction.atomic():  # one commit, not two, before the first token
            Message.objects.create(conversation=conversation, role=Message.Role.USER, content=question)
            if not conversation.title:
                conversation.title = question[:80]
            conversation.save(update_fields=["title", "updated_at"])
    if filters is None and conversation.collection_id:
        filters = retrieval.Filters(collections=(conversation.collection_id,))
    # Citation numbers in order of first use as the answer streams (chat.citations), and a reader who
    # hangs up (the page's "stop") keeps the answer so far, saved as stopped.
    events = answer(user=conversation.owner, question=question, history=history, filters=filters)
    numbering = citations.StreamNumbering(settings.RETRIEVAL_K)
    result: Result | None = None
    try:
        for event in events:
            if event["type"] == "result":
                result = event
            elif text := numbering.feed(event["text"]):
                yield Token(type="token", text=text)
        if text := numbering.flush():
            yield Token(type="token", text=text)
    except GeneratorExit:
        if result is not None:  # all but the last piece had gone
            citations.save_answer(conversation=conversation, result=result, replacing_after=again)
        elif (partial := citations.stop(events)) is not None:
            citations.save_answer(conversation=conversation, result=partial, error=Message.STOPPED)
        raise
    assert result is not None  # answer() always ends with its result
    message, saved = citations.save_answer(conversation=conversation, result=result, replacing_after=again)
    note_interest(user=conversation.owner, result=result, cited=[c.document_id for c in saved])
    yield Done(
        type="done", message_id=message.pk, content=message.content, error=message.error,
        citations=[citation_json(c, text) for c, text in zip(saved, citations.labels(saved), strict=True)],
    )
