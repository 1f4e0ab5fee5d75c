"""Citations a reader can follow: numbered 1..n in the order the answer uses them, labelled by where the
passage is (page, heading path, or "passage n of m"), each opening the passage with its neighbours.

The model cites the passages it was given by their place in the prompt ("[5]"); an answer that cites
passages 1 and 5 would show "1., 5." — so the numbers are rewritten, as the answer streams and in what
is saved, to the order of first use. Markers of passages the model was not given stay as written (they
link nowhere); they are never confused with a rewritten one, which is at most the number of passages.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.http import Http404
from django.urls import reverse

from chat import llm as llms
from chat.models import Citation, Conversation, Message
from chat.prompting import CITATION
from documents.models import Chunk
from documents.selectors import document_for_user

if TYPE_CHECKING:
    from chat.services import AnswerEvent, Result

STOPPED = Message.STOPPED

# The end of a streamed text that may still become a marker: "[", "[1", "[1, 2" — held back until known.
_OPEN_MARKER = re.compile(r"\[[0-9,\s]{0,40}\Z")


class Numbering:
    """Passage numbers (1-based places in the prompt) → citation numbers 1..n in order of first use."""

    def __init__(self, available: int):
        self.available = available
        self.numbers: dict[int, int] = {}

    def number(self, passage: int) -> int | None:
        if not 1 <= passage <= self.available:
            return None
        return self.numbers.setdefault(passage, len(self.numbers) + 1)

    def rewrite(self, text: str) -> str:
        """``text`` with every citation marker renumbered (unknown passages keep their number)."""

        def renumber(match: re.Match[str]) -> str:
            numbers = [int(n) for n in match.group(1).split(",")]
            rewritten = [self.number(n) for n in numbers]
            if all(r is None for r in rewritten):
                return match.group(0)
            pairs = zip(numbers, rewritten, strict=True)
            return "[" + ", ".join(str(n if r is None else r) for n, r in pairs) + "]"

        return CITATION.sub(renumber, text)

    @property
    def cited(self) -> list[int]:
        """The passages cited, in citation order (citation ``i`` is passage ``cited[i - 1]``)."""
        return list(self.numbers)


class StreamNumbering(Numbering):
    """``Numbering`` for a text that arrives in pieces: a piece ending inside a possible marker keeps
    that end until the next piece, so a marker split across pieces is rewritten whole."""

    def __init__(self, available: int):
        super().__init__(available)
        self.pending = ""

    def feed(self, piece: str) -> str:
        text = self.pending + piece
        held = _OPEN_MARKER.search(text)
        cut = held.start() if held else len(text)
        self.pending = text[cut:]
        return self.rewrite(text[:cut])

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return self.rewrite(text)


def label(*, title: str, page: int | None, heading: str, passage: int | None, passages: int | None) -> str:
    """Where a cited passage is, for a reader: "Title, page 4", "Title › Section › Part", or
    "Title, passage 3 of 12" (a document with neither pages nor headings)."""
    if page:
        return _after(title, f"page {page}")
    if heading.strip():
        return f"{_bare(title)} › " + " › ".join(part.strip() for part in heading.split(" > ") if part.strip())
    if passage and passages:
        return _after(title, f"passage {passage} of {passages}")
    return title


def _bare(title: str) -> str:
    """``title`` without the full stop, comma, colon or semicolon it may end with ("… a randomized trial.")."""
    title = title.strip()
    return title if title.endswith("...") else title.rstrip(".,;: ")


def _after(title: str, where: str) -> str:
    """``where`` after ``title``, with one mark between them: "Trial, page 4", never "Trial., page 4"."""
    bare = _bare(title)
    return f"{bare} ({where})" if bare.endswith(("?", "!", "…", "...")) else f"{bare}, {where}"


def labels(citations: Sequence[Citation]) -> list[str]:
    """The labels of one answer's citations, in their order, no two alike: a label that would be another's
    too ("Title › History › Founding" for two passages of one section) says which passage it is."""
    plain = [label_of_one(citation) for citation in citations]
    repeated = {text for text in plain if plain.count(text) > 1}
    return [
        _after(text, f"passage {c.passage} of {c.passages}") if text in repeated and c.passage and c.passages
        else text
        for text, c in zip(plain, citations, strict=True)
    ]


def label_of_one(citation: Citation) -> str:
    """``citation``'s label on its own (``label_of`` tells it apart from the answer's other citations)."""
    return label(title=citation.title, page=citation.page, heading=citation.heading,
                 passage=citation.passage, passages=citation.passages)


def label_of(citation: Citation) -> str:
    """``citation``'s label as its answer shows it (``labels``), from its message's citations: the prefetched
    ones when the page prefetched them."""
    siblings = list(citation.message.citation_set.all())
    for sibling, text in zip(siblings, labels(siblings), strict=True):
        if sibling.pk == citation.pk:
            return text
    return label_of_one(citation)


def save_answer(
    *, conversation: Conversation, result: Result, error: str | None = None, replacing_after: Message | None = None,
) -> tuple[Message, list[Citation]]:
    """Save an answer with its content renumbered and one Citation per cited passage, numbered 1..n.

    ``replacing_after``: a question asked again; an answer without error replaces every message after it.

    A re-ingestion may have replaced a cited chunk since it was retrieved: its citation is kept, unlinked.
    """
    hits = result["hits"]
    numbering = Numbering(len(hits))
    content = numbering.rewrite(result["content"])
    cited = [hits[i - 1] for i in numbering.cited]
    alive = {
        pk: (ordinal, total) for pk, ordinal, total in Chunk.objects.filter(pk__in=[hit.chunk_id for hit in cited])
        .values_list("pk", "ordinal", "document__chunk_count")
    }
    with transaction.atomic():
        if replacing_after is not None and not (error or result["error"]):
            conversation.messages.filter(id__gt=replacing_after.pk).delete()
        message = Message.objects.create(
            conversation=conversation, role=Message.Role.ASSISTANT, content=content,
            error=result["error"] if error is None else error, backend=result["backend"],
        )
        citations = Citation.objects.bulk_create(
            Citation(
                message=message, chunk_id=hit.chunk_id if hit.chunk_id in alive else None, index=index,
                document_id=hit.document_id, title=hit.document_title[:300], page=hit.page,
                heading=hit.heading,
                passage=alive[hit.chunk_id][0] + 1 if hit.chunk_id in alive else None,
                passages=alive[hit.chunk_id][1] or None if hit.chunk_id in alive else None,
            )
            for index, hit in enumerate(cited, start=1)
        )
    return message, citations


def stop(answer: Generator[AnswerEvent, None, None]) -> Result | None:
    """End an answer that is still streaming, for its partial result (``None`` if it has none to give).

    The reader stopped it: to ``chat.services.answer`` that is the model's stream failing, so it ends as
    it would then — with the text so far and the passages it was given, which the partial answer cites.
    """
    try:
        event = answer.throw(llms.LLMError(STOPPED))
    except (llms.LLMError, StopIteration):
        return None
    finally:
        answer.close()
    return event if event["type"] == "result" else None


@dataclass(frozen=True)
class Passage:
    """A cited chunk with the chunks before and after it in its document, for the passage panel."""

    chunk: Chunk
    previous: Chunk | None
    next: Chunk | None
    label: str
    document_url: str


def passage_for_user(user: Any, chunk_id: int) -> Passage:
    """The chunk ``chunk_id`` and its neighbours if ``user`` may read its document; else Http404.

    Access is the document's (documents.selectors.document_for_user): a chunk of a document the user may
    not read is not found, exactly like one that does not exist.
    """
    document_id = Chunk.objects.filter(pk=chunk_id).values_list("document_id", flat=True).first()
    if document_id is None:
        raise Http404("No such passage.")
    document, _ = document_for_user(user, document_id)
    chunks: dict[int, Chunk] = {}
    chunk = document.chunks.only("ordinal", "text", "page", "heading").get(pk=chunk_id)
    for neighbour in document.chunks.filter(ordinal__in=[chunk.ordinal - 1, chunk.ordinal + 1]).only(
        "ordinal", "text", "page", "heading"
    ):
        chunks[neighbour.ordinal] = neighbour
    return Passage(
        chunk=chunk,
        previous=chunks.get(chunk.ordinal - 1),
        next=chunks.get(chunk.ordinal + 1),
        label=label(title=document.title, page=chunk.page, heading=chunk.heading,
                    passage=chunk.ordinal + 1, passages=document.chunk_count or None),
        document_url=reverse("documents:detail", args=[document.pk]) + f"?chunk={chunk.pk}#chunk-{chunk.pk}",
    )

