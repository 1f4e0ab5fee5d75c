"""Answers without a language model: the passages' best sentences first, and a gate for "nothing relevant".

The answer leads with the one to three sentences of the retrieved passages that best answer the
question, each cited, then points to the other passages ("More in the sources"). A sentence's score
is the share of the question's rare words it holds plus its passage's cosine similarity to the
question (the embedding model's, from retrieval); ``EMBED_CANDIDATES`` > 0 also embeds the best
candidates with the configured backend (in one call) and scores them by their own similarity.
Fragments that state nothing (page numbers, headings, list markers, boilerplate) are never quoted,
nor the same sentence twice.
Deterministic: ties go to the better-ranked passage, then to the earlier sentence.

The gate (``is_relevant``) decides from signals that compare across questions and collections: the
best cosine similarity of a passage to the question, and whether the question's rare words occur in
the passages. Its thresholds come from bench/relevance_gate.py (see bench/BENCHMARKS.md). The fused
hybrid score is not one of them: it is min-max normalised per query, so the best passage of any
question scores about the same.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from documents import embeddings
from documents.search import Hit

# Every user reads this: it labels the answer as extractive and gives no configuration advice (that is the
# administrators' business: /healthz and the documents page tell them what is in use).
NO_LLM_NOTE = "*No language model is configured, so this answer quotes the most relevant passages.*"
MORE = "More in the sources:"



@dataclass(frozen=True)
class Gate:
    """When passages count as relevant: a passage at least ``similarity`` similar to the question, or
    one at least ``min_similarity`` similar while the passages hold ``coverage`` of the question's
    words (weighted by rarity: a question whose rarest words occur nowhere is not answered)."""

    similarity: float
    min_similarity: float
    coverage: float


# Calibrated per embedding model on bench/data/gate_questions.json (bench/relevance_gate.py): cosine
# similarities of different models live on different scales.
GATES = {
    "sentence-transformers/all-MiniLM-L6-v2": Gate(similarity=0.40, min_similarity=0.25, coverage=0.40),
}
# Other models (not calibrated): the question's words alone decide.
WORDS_ONLY = Gate(similarity=math.inf, min_similarity=-math.inf, coverage=0.35)


MAX_SENTENCES = 3
# A sentence is quoted after the best one only when it scores at least this share of the best score.
RUNNER_UP_SHARE = 0.8
# Sentences at least this similar to one already chosen say the same thing (near-duplicates).
DUPLICATE_SIMILARITY = 0.9
# Weight of the rare-word overlap (0..1) beside the cosine similarity (about 0..1).
LEXICAL_WEIGHT = 0.5
# Before embedding: weight of the passage's similarity beside a sentence's rare-word overlap.
PASSAGE_WEIGHT = 0.5
# Statements embedded per answer, the best by words and passage (see rank()). None by default: on this
# machine one call to the local model costs more than the 50 ms an answer may add, and the answers'
# first sentences were no better with it (bench/extractive_answer.py, bench/relevance_gate.py).
EMBED_CANDIDATES = 0
# Maximal marginal relevance: relevance against novelty when the second and third sentences are chosen.
MMR_LAMBDA = 0.7
# Longer sentences are cut to this many characters when shown (a whole paragraph without full stops).
MAX_SENTENCE_CHARACTERS = 600

WORD = re.compile(r"[^\W_]+", re.UNICODE)
NOT_LETTERS = re.compile(r"[\W\d_]+")
DIGITS = re.compile(r"\d+")
# A sentence ends at . ! or ? (or a closing quote/bracket after one) followed by space and a capital,
# digit, quote or bracket: "p = 0.016)." and "e.g. the" stay whole.
SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z0-9\"'(\[])")
FENCE = re.compile(r"^(```|~~~)")
TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
TABLE_RULE = re.compile(r"^\s*\|?[\s:|-]+\|[\s:|-]*$")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s")
LIST_MARKER = re.compile(r"^\s*(?:[-*+•·▪–]|\(?[0-9]{1,3}[.)]|\(?[a-zA-Z][.)]|\(?[ivxIVX]{1,4}[.)])\s+")
# A list marker left at the end by the sentence split: "ACCOUNTING RECORDS … a.", "… is kept. b." Only after
# what cannot go on into it (a full stop, a colon, a word in capitals): "NFT Stages I to VI.", "hepatitis B."
# and "aged 65." end on their last word, which stays.
TRAILING_MARKER = re.compile(r"(?:(?<=[.:;!?])|(?<=[A-Z]{2}))\s+\(?(?:[a-zA-Z]|[0-9]{1,3}|[ivxIVX]{1,4})[.)]$")
# Footnote marks ("[18]", "[19][20]", Wikipedia's "[14]: 228"): they would stand beside the answer's own
# citation numbers and look like them. Not a Markdown link's "[1](…)".
FOOTNOTE_MARKS = re.compile(
    r"(?:\s?\[\d{1,4}\](?!\())+(?::[\s\u200a]*\d+(?:[–-]\d+)?(?:,[\s\u200a]*\d+(?:[–-]\d+)?)*)?"
)
BOILERPLATE = re.compile(
    r"^(?:page\s+\d+(?:\s+of\s+\d+)?|\d+\s+of\s+\d+|table of contents|contents|index|"
    r"(?:copyright|©).*|all rights reserved\.?|confidential|continued(?: on next page)?|"
    r"(?:see|back to) (?:top|contents)|click here.*|this page (?:is )?intentionally left blank\.?)$",
    re.IGNORECASE,
)
# A passage's first words in lower case ("that progressed …", not "iPhone sales …"): the rest of a sentence.
CONTINUATION = re.compile(r"^[a-z]+[\s,;:]")
NUMBERS = re.compile(r"^[\s\d.,:;/()%-]+$")
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing done down during each else ever few for from further get
gets got had has have having he her here hers him his how however i if in into is it its itself just
let like made make many may me might more most much must my no nor not now of off on once only or other
our ours out over own per please same shall she should so some such than that the their theirs them then
there these they this those through to too under until up upon us use used very via was we were what
whatever when where whether which while who whom whose why will with within without would yes yet you
your yours tell show give explain describe list find say said does doesn know according document documents
""".split())


@dataclass(frozen=True)
class Sentence:
    passage: int  # 1-based index of its passage in the hits
    position: int  # order within the passage
    text: str
    kind: str = "text"  # "text", "code" (a fenced block, kept whole) or "table" (one row, kept whole)


def terms(text: str) -> list[str]:
    """The words of ``text`` that carry meaning, lower-cased and reduced to a rough stem."""
    return [stem(word) for word in WORD.findall(text.lower()) if word not in STOPWORDS and len(word) > 1]


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light English stem, enough to match "vacations" with "vacation" and "expired" with "expires"."""
    for suffix, replacement in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: len(word) - len(suffix)] + replacement
    return word


def split(text: str, passage: int) -> list[Sentence]:
    """A passage's statements: sentences of its prose, fenced code blocks and table rows kept whole."""
    units: list[tuple[str, str]] = []
    prose: list[str] = []

    def flush() -> None:
        if prose:
            paragraph = FOOTNOTE_MARKS.sub("", " ".join(line.strip() for line in prose))
            units.extend(("text", part) for part in SENTENCE_END.split(paragraph))
            prose.clear()

    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if FENCE.match(line.strip()):
            flush()
            fence = line.strip()[:3]
            block = [line]
            index += 1
            while index < len(lines) and not lines[index].strip().startswith(fence):
                block.append(lines[index])
                index += 1
            block.append(lines[index] if index < len(lines) else fence)
            units.append(("code", "\n".join(block)))
        elif TABLE_ROW.match(line):
            flush()
            if not TABLE_RULE.match(line):
                units.append(("table", line.strip()))
        elif not line.strip() or HEADING.match(line):
            flush()  # a blank line ends a paragraph; a heading states nothing
        elif BOILERPLATE.match(line.strip()) or NUMBERS.match(line):
            pass  # a page number or running footer inside a paragraph: the sentence goes on after it
        elif LIST_MARKER.match(line):
            flush()  # a list item starts a sentence of its own
            prose.append(line)
        else:
            prose.append(line)
        index += 1
    flush()
    if units and units[0][0] == "text" and CONTINUATION.match(units[0][1]):
        # A passage that starts in the middle of a sentence (chunks overlap by words, not sentences): its
        # first words end a sentence that begins in the previous passage: "that progressed in …" is no answer.
        units = units[1:]
    sentences: list[Sentence] = []
    for kind, unit in units:
        if kind == "text":
            unit = statement(unit)
            if not unit:
                continue
        sentences.append(Sentence(passage=passage, position=len(sentences), text=unit, kind=kind))
    return sentences


def statement(text: str) -> str:
    """``text`` without list markers, or "" when it states nothing (a number, heading, boilerplate)."""
    if HEADING.match(text):
        return ""
    text = LIST_MARKER.sub("", text.strip())
    text = TRAILING_MARKER.sub("", text).strip()
    if not text or BOILERPLATE.match(text):
        return ""
    words = [word for word in WORD.findall(text) if not DIGITS.fullmatch(word)]
    letters = len(NOT_LETTERS.sub("", text))
    if len(words) < 4 or len(text) < 20 or letters < 0.5 * len(text.replace(" ", "")):
        return ""  # page numbers, "Section 3.1", "17 18 19", a label
    if not any(ch.islower() for ch in text):
        return ""  # ALL-CAPS HEADINGS
    if not text.rstrip("\"')]").endswith((".", "!", "?", ":", ";")) and len(words) < 8:
        return ""  # a short line without a full stop: a heading or a caption, not a statement
    if len(text) > MAX_SENTENCE_CHARACTERS:
        text = text[:MAX_SENTENCE_CHARACTERS].rsplit(" ", 1)[0] + " …"
    return text


def rarity(question_terms: Sequence[str], bags: Sequence[frozenset[str] | set[str]]) -> dict[str, float]:
    """Each question word's weight: BM25's inverse document frequency over texts' words (``bags``).

    A word in few of the texts weighs most: it is what the question is about. A word in none counts
    as if it were in one, so that a common word the texts happen to lack ("go") does not outweigh
    the rest, while a rare one ("Mongolia") still weighs like the rarest found.
    """
    total = len(bags)
    weights = {}
    for term in dict.fromkeys(question_terms):
        frequency = max(sum(term in bag for bag in bags), 1)
        weights[term] = math.log(1 + (total - frequency + 0.5) / (frequency + 0.5))
    return weights


def coverage(weights: dict[str, float], words: set[str]) -> float:
    """The share of the question's (rarity-weighted) words that ``words`` holds, 0..1."""
    total = sum(weights.values())
    return sum(weight for term, weight in weights.items() if term in words) / total if total else 0.0


@dataclass(frozen=True)
class Signals:
    similarity: float  # the best passage's cosine similarity to the question (0 without a vector arm)
    coverage: float  # rarity-weighted share of the question's words found in the passages


def signals(question: str, hits: Sequence[Hit]) -> Signals:
    similarity = max((hit.similarity for hit in hits if hit.similarity is not None), default=0.0)
    bags = [set(terms(f"{hit.heading} {hit.text}")) for hit in hits]
    weights = rarity(terms(question), bags)
    return Signals(similarity=float(similarity), coverage=coverage(weights, set().union(*bags)))


def gate_for(model_name: str) -> Gate:
    return GATES.get(model_name, WORDS_ONLY)


def is_relevant(question: str, hits: Sequence[Hit], gate: Gate | None = None) -> bool:
    """Whether the passages are about the question, by the gate of the configured embedding model."""
    if not hits:
        return False
    gate = gate or gate_for(embeddings.get_backend().model_name)
    found = signals(question, hits)
    return found.similarity >= gate.similarity or (
        found.similarity >= gate.min_similarity and found.coverage >= gate.coverage
    )


@dataclass(frozen=True)
class Scored:
    sentence: Sentence
    score: float
    words: frozenset[str]
    vector: np.ndarray | None = None


def statements(hits: Sequence[Hit]) -> list[Sentence]:
    """The passages' statements in order, each once (the same sentence in two passages is quoted once), but not
    their document's title (the citation names it)."""
    sentences: list[Sentence] = []
    seen: set[str] = set()
    for index, hit in enumerate(hits, start=1):
        title = " ".join(WORD.findall(hit.document_title.lower()))
        for sentence in split(hit.text, index):
            key = " ".join(WORD.findall(sentence.text.lower()))
            if key and key not in seen and key != title:  # a title atop the first passage answers nothing
                seen.add(key)
                sentences.append(sentence)
    return sentences


def rank(question: str, hits: Sequence[Hit], candidates: int = EMBED_CANDIDATES) -> list[Scored]:
    """The passages' statements that may answer ``question``, best first.

    Every statement is scored by the share of the question's rare words it holds, plus its passage's
    similarity to the question; the ``candidates`` best are then embedded (with the question, in one
    call) and scored by their own similarity instead. Embedding every sentence of six passages costs
    the local model about a second on this machine (bench/extractive_answer.py); a few candidates fit
    the latency budget. ``candidates=0``: no embedding.
    """
    sentences = statements(hits)
    if not sentences:
        return []
    words = [frozenset(terms(s.text)) for s in sentences]
    weights = rarity(terms(question), words)
    lexical = [coverage(weights, set(bag)) for bag in words]
    passage = [hits[s.passage - 1].similarity or 0.0 for s in sentences]
    prior = [lexical[i] + PASSAGE_WEIGHT * passage[i] for i in range(len(sentences))]
    order = sorted(range(len(sentences)), key=lambda i: (-prior[i], sentences[i].passage, sentences[i].position))
    if candidates <= 0:
        return [Scored(sentences[i], prior[i], words[i]) for i in order]
    chosen = order[:candidates]
    # Every backend's vectors are L2-normalised: a dot product is the cosine similarity.
    vectors = np.asarray(
        embeddings.get_backend().embed_documents([question] + [sentences[i].text for i in chosen]), dtype=np.float32,
    )
    scored = [
        Scored(sentences[i], float(vectors[n + 1] @ vectors[0]) + LEXICAL_WEIGHT * lexical[i], words[i], vectors[n + 1])
        for n, i in enumerate(chosen)
    ]
    return sorted(scored, key=lambda s: (-s.score, s.sentence.passage, s.sentence.position))


def likeness(a: Scored, b: Scored) -> float:
    """How much two statements say the same: their cosine similarity, or the overlap of their words."""
    overlap = len(a.words & b.words) / len(a.words | b.words) if a.words | b.words else 0.0
    if a.vector is not None and b.vector is not None:
        return max(overlap, float(a.vector @ b.vector))
    return overlap


def best_sentences(
    question: str, hits: Sequence[Hit], limit: int = MAX_SENTENCES, candidates: int = EMBED_CANDIDATES,
) -> list[Scored]:
    """The one to ``limit`` statements that best answer ``question``, best first, none saying the same."""
    ranked = rank(question, hits, candidates)
    if not ranked or ranked[0].score <= 0:
        return []
    chosen = [ranked[0]]
    floor = RUNNER_UP_SHARE * ranked[0].score
    while len(chosen) < limit:
        best: Scored | None = None
        best_value = -math.inf
        for candidate in ranked:
            if candidate.score < floor or any(candidate is c for c in chosen):
                continue
            closest = max(likeness(candidate, c) for c in chosen)
            if closest >= DUPLICATE_SIMILARITY:
                continue
            value = MMR_LAMBDA * candidate.score - (1 - MMR_LAMBDA) * closest
            if value > best_value:
                best, best_value = candidate, value
        if best is None:
            break
        chosen.append(best)
    return chosen


def quote(scored: Scored) -> str:
    sentence = scored.sentence
    if sentence.kind == "code":
        return f"{sentence.text}\n[{sentence.passage}]\n\n"
    if sentence.kind == "table":
        cells = [cell.strip() for cell in sentence.text.strip().strip("|").split("|")]
        return f"> {' · '.join(cells)} [{sentence.passage}]\n\n"
    return f"> {sentence.text} [{sentence.passage}]\n\n"


def answer(question: str, hits: Sequence[Hit], candidates: int = EMBED_CANDIDATES) -> Iterator[str]:
    """The extractive answer, in parts as it is streamed: best sentences, the other sources, the note."""
    chosen = best_sentences(question, hits, candidates=candidates)
    for scored in chosen:
        yield quote(scored)
    quoted = {scored.sentence.passage for scored in chosen}
    rest = [index for index in range(1, len(hits) + 1) if index not in quoted]
    if not chosen:
        yield "These passages may answer it: " + ", ".join(f"[{index}]" for index in rest) + ".\n\n"
    elif rest:
        yield f"{MORE} " + ", ".join(f"[{index}]" for index in rest) + ".\n\n"
    yield NO_LLM_NOTE
