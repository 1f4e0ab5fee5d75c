"""Follow-up questions keep their subject without a language model.

"Why did they increase?" after "What were Acme's revenues in 2023?" is about Acme's revenues; searched
as asked, it finds whatever passage says "increase" (a novel, another company). Without a language model
to rewrite it, the follow-up is searched together with the conversation's subject: the last question
that stood on its own. Passages of documents that hold none of that subject are then set aside.

Deterministic: a question is a follow-up when the conversation has an earlier question and the question
has at most ``MAX_OWN_TERMS`` words that carry meaning of its own while it points back (a pronoun such as
"it", "they", "those") or continues ("and ...", "what about ..."), or has no such words at all ("why?",
"tell me more"). A question with more words of its own states its subject, whatever its pronouns.
Measured in bench/followups.py (bench/BENCHMARKS.md).

A continuation that names something ("what about Globex?") is carried over too, but when none of the
passages kept for the subject holds one of its words ("what about Microsoft's founders?" after a question on
parental leave), it changed the subject: it is searched as asked (``changes_subject``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from chat.extractive import DIGITS, WORD, coverage, rarity, terms
from chat.prompting import Turn
from documents.search import Hit

# Words that point back to something said before.
ANAPHORA = frozenset("""
it its itself they them their theirs themselves this that these those he him his she her hers there such
""".split())
# Openings that continue the previous question ("and in 2022?", "what about Globex?").
CONTINUATION = re.compile(
    r"^\s*(?:and|but|also|so|or|then|what about|how about|what else|anything else|tell me more|more|"
    r"go on|continue|elaborate|same for|compared|in comparison)\b",
    re.IGNORECASE,
)
# More words of its own than this and a question states its subject (bench/followups.py).
MAX_OWN_TERMS = 3
# How far back the subject is looked for, in questions.
LOOKBACK = 6
# The subject's length in the search query, in characters (a pasted text as the first question).
SUBJECT_CHARACTERS = 300
# A document is on the subject when its passages hold this share of the subject's words, weighted by
# rarity among the passages found (chat.extractive.coverage).
ON_SUBJECT = 0.5


@dataclass(frozen=True)
class FollowUp:
    """A follow-up's search query (the subject, then the question) and the subject it carries."""

    query: str
    subject: str


def is_follow_up(question: str) -> bool:
    """Whether ``question`` leans on an earlier one for its subject (given that there is one)."""
    own = set(terms(question))
    if not own:
        return bool(WORD.search(question))  # "why?", "tell me more"; not an empty or symbol-only text
    if len(own) > MAX_OWN_TERMS:
        return False
    words = set(WORD.findall(question.lower()))
    return bool(words & ANAPHORA) or bool(CONTINUATION.match(question))


def subject_of(history: Sequence[Turn]) -> str:
    """The conversation's subject: its last question that stood on its own (else its last question)."""
    questions = [turn["content"] for turn in history if turn["role"] == "user" and turn["content"].strip()]
    recent = questions[-LOOKBACK:]
    for question in reversed(recent):
        if not is_follow_up(question):
            return question[:SUBJECT_CHARACTERS]
    return recent[-1][:SUBJECT_CHARACTERS] if recent else ""


def follow_up(question: str, history: Sequence[Turn]) -> FollowUp | None:
    """The search for ``question`` with its subject carried over, or None when it stands on its own."""
    if not is_follow_up(question):
        return None
    subject = subject_of(history)
    if not subject:
        return None
    return FollowUp(query=f"{subject} {question}", subject=subject)


def on_subject(hits: list[Hit], subject: str) -> list[Hit]:
    """The passages of documents that hold the subject's words (all passages when none does).

    A document's passages count together: the passage that answers "why did they increase?" need not
    name the company again when another passage of its document does.
    """
    documents: dict[int, set[str]] = {}
    for hit in hits:
        documents.setdefault(hit.document_id, set()).update(terms(f"{hit.heading} {hit.text}"))
    weights = rarity(terms(subject), list(documents.values()))
    kept = {document for document, words in documents.items() if coverage(weights, words) >= ON_SUBJECT}
    return [hit for hit in hits if hit.document_id in kept] or hits


def changes_subject(question: str, kept: list[Hit]) -> bool:
    """Whether ``question``, a continuation naming something ("what about Microsoft's founders?") that points
    back to nothing, holds none of its words in the passages ``kept`` for the subject (on_subject): it moved on,
    and is to be searched as asked. A question that points back ("why did they increase?") never is: its words
    are about the subject by its own saying."""
    words = set(WORD.findall(question.lower()))
    # Its words with letters: "and in 2022?" asks the subject again for another year, whether or not it is found.
    own = {term for term in terms(CONTINUATION.sub("", question, count=1)) if not DIGITS.fullmatch(term)}
    if not own or words & ANAPHORA or not CONTINUATION.match(question):
        return False
    held: set[str] = set()
    for hit in kept:
        held.update(terms(f"{hit.document_title} {hit.heading} {hit.text}"))
    return not own & held
