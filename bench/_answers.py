"""Data for the answer benchmarks (bench/relevance_gate.py, bench/extractive_answer.py).

Loads, into its own database (once; later runs reuse it), through the normal pipeline and the local
all-MiniLM-L6-v2 int8 model:
- **scifact**: the abstracts relevant to the first N SciFact dev claims (qrels) and the first
  ``distractors`` other abstracts of the corpus, as ``import_beir`` imports them;
- **fixtures**: the shared fixtures that hold English text (the Wikipedia article, the Word paper, the
  Markdown code blocks; the German PDF book is left out: no English question asks about it).
Questions and labels: bench/data/gate_questions.json.

Also the answerer the app had before chat/extractive.py (``quoting_answer``), for the before/after
comparisons.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import _common

QUESTIONS = Path(__file__).resolve().parent / "data" / "gate_questions.json"
FIXTURES = ("good-wikipedia.html", "good.docx", "good-codeblock.md")
DATABASE = "ragbench_answers"


@dataclass
class Question:
    text: str
    answerable: bool
    kind: str  # "fixture", "scifact" or "unanswerable"
    expect: str = ""  # fixture questions: a substring of the fact
    relevant: set[str] = field(default_factory=set)  # SciFact: the relevant abstracts' ids (qrels)


def setup(*, claims: int | None = None, distractors: int = 150) -> tuple[object, list[Question]]:
    """Django on the bench database with the corpora loaded; the bench user and the labelled questions."""
    _common.setup_django(DATABASE, EMBEDDING_BACKEND="local", LOG_LEVEL="WARNING")
    from django.contrib.auth import get_user_model
    from django.core.files.base import ContentFile
    from django.core.management import call_command

    from documents import pipeline, services
    from documents.models import Document

    labels = json.loads(QUESTIONS.read_text())
    claims = labels["scifact_claims"] if claims is None else claims
    user, _ = get_user_model().objects.get_or_create(username="bench")
    scifact = _common.require_shared("data/scifact")
    queries = [json.loads(line) for line in (scifact / "queries-dev.jsonl").open()]
    qrels: dict[str, set[str]] = {}
    for line in (scifact / "qrels-dev.tsv").open().readlines()[1:]:
        query, corpus_id, _score = line.split("\t")
        qrels.setdefault(query, set()).add(corpus_id)
    judged = [q for q in queries if q["_id"] in qrels][:claims]
    wanted = set().union(*(qrels[q["_id"]] for q in judged))
    subset, others = [], 0
    for line in (scifact / "corpus.jsonl").open():
        record = json.loads(line)
        if record["_id"] in wanted:
            subset.append(line)
        elif others < distractors:
            subset.append(line)
            others += 1
    cache = _common.ROOT / "var" / "bench-cache"
    cache.mkdir(parents=True, exist_ok=True)
    corpus = cache / "scifact-answers.jsonl"
    corpus.write_text("".join(subset))
    out = io.StringIO()
    call_command("import_beir", str(corpus), collection="scifact", owner="bench", mode="inline", stdout=out)
    print(out.getvalue().strip())
    fixtures = services.collection_for_upload(user=user, name="fixtures")
    for name in FIXTURES:
        if not Document.objects.filter(collection=fixtures, original_filename=name).exists():
            data = _common.require_shared(f"data/fixtures/{name}").read_bytes()
            document = services.document_create(owner=user, collection=fixtures, file=ContentFile(data, name=name),
                                              filename=name, enqueue=False)
            pipeline.document_ingest(document_id=document.pk)
    questions = [Question(item["question"], True, "fixture", expect=item["expect"]) for item in labels["answerable"]]
    questions += [Question(q["text"], True, "scifact", relevant=qrels[q["_id"]]) for q in judged]
    questions += [Question(text, False, "unanswerable") for text in labels["unanswerable"]]
    return user, questions


def external_ids(hits) -> dict[int, str]:
    from documents.models import Document

    ids = {hit.document_id for hit in hits}
    return dict(Document.objects.filter(pk__in=ids).values_list("pk", "external_id"))


# The answer the app gave before chat/extractive.py: sentences sharing the most question words, in the
# passages' order (chat/llm.py at commit 517b6b2).
WORD = re.compile(r"\w+", re.UNICODE)
SENTENCE = re.compile(r"(?<=[.!?])\s+")
STOPWORDS = frozenset(
    "a an the of to in on for and or is are was were be been what which who whom how why when where "
    "does do did it its this that these those with by from as at about can could should would i you".split()
)
NO_LLM_NOTE = "*No language model is configured, so this answer quotes the most relevant passages.*"


def quoting_answer(question: str, hits, max_sentences: int = 3) -> Iterator[str]:
    terms = {w for w in WORD.findall(question.lower()) if w not in STOPWORDS}
    scored = []
    for index, hit in enumerate(hits, start=1):
        for position, sentence in enumerate(SENTENCE.split(hit.text)):
            words = set(WORD.findall(sentence.lower()))
            overlap = len(terms & words)
            if overlap and 20 <= len(sentence) <= 600:
                scored.append((-overlap, index, position, sentence.strip(), index))
    scored.sort()
    chosen = scored[:max_sentences]
    if not chosen:
        yield "The documents I can search do not seem to answer this question.\n\n"
        yield NO_LLM_NOTE
        return
    for _, _, _, sentence, index in sorted(chosen, key=lambda item: (item[1], item[2])):
        yield f"> {sentence} [{index}]\n\n"
    yield NO_LLM_NOTE


CITE = re.compile(r"\[(\d+)\]")


CODE = re.compile(r"^((```|~~~).*?\n\2)\n\[(\d+)\]", re.DOTALL)


def first_unit(answer: str) -> tuple[str, int | None]:
    """The answer's first quoted statement (a sentence or a code block) and the passage it cites."""
    if code := CODE.match(answer):
        return code.group(1), int(code.group(3))
    text = answer.split("\n\n", 1)[0]
    match = CITE.search(text)
    return text, int(match.group(1)) if match else None
