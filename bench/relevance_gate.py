"""The relevance gate and the answer's first sentence, before and after chat/extractive.py.

    python bench/relevance_gate.py [--quick] [--all-sentences]

Over a labelled set (bench/data/gate_questions.json: questions over the shared fixtures with the fact
each answer must state, the first SciFact dev claims with their qrels, and unanswerable questions),
every question is searched across all collections as the chat searches (hybrid, RETRIEVAL_K passages).
Then:
- the gate: before = "a passage is relevant" (similarity >= RETRIEVAL_MIN_SIMILARITY or a full-text
  match); after = chat.extractive.is_relevant with the thresholds in chat/extractive.py. The bench also
  searches the thresholds that refuse the most unanswerable questions while keeping every answerable
  one, fitted on half of the questions and checked on the other half;
- the first sentence: the share of answerable questions whose answer's first quoted statement holds the
  fact (fixture questions: the expected substring; SciFact: quoted from an abstract relevant per
  qrels), before (the previous quoting answerer) and after (chat.extractive.answer as configured, without
  sentence embedding, and with the best 8 sentences embedded; --all-sentences embeds every sentence: slow here).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _answers  # noqa: E402
import _common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 SciFact claims and 20 distractors")
    parser.add_argument("--all-sentences", action="store_true", help="also embed every sentence (slow)")
    args = parser.parse_args()
    user, questions = _answers.setup(claims=5 if args.quick else None, distractors=20 if args.quick else 150)
    from django.conf import settings

    from chat import extractive
    from documents import search as retrieval

    model = extractive.GATES["sentence-transformers/all-MiniLM-L6-v2"]
    rows = []
    for question in questions:
        hits = retrieval.search(user=user, query=question.text, k=settings.RETRIEVAL_K)
        found = extractive.signals(question.text, hits)
        rows.append((question, hits, found))
        _answers_progress(len(rows), len(questions))

    def refused(gate: extractive.Gate, found: extractive.Signals) -> bool:
        return not (found.similarity >= gate.similarity
                    or (found.similarity >= gate.min_similarity and found.coverage >= gate.coverage))

    def gate_figures(decide, subset) -> tuple[float, float, float, int]:
        """Precision and recall of "nothing relevant", the share of answerable kept, and answerable lost."""
        said = [(q, decide(q, hits, found)) for q, hits, found in subset]
        true_refusals = sum(1 for q, no in said if no and not q.answerable)
        refusals = sum(1 for _, no in said if no)
        unanswerable = sum(1 for q, _ in said if not q.answerable)
        answerable = sum(1 for q, _ in said if q.answerable)
        lost = sum(1 for q, no in said if no and q.answerable)
        return (true_refusals / refusals if refusals else 1.0, true_refusals / unanswerable if unanswerable else 1.0,
                1 - lost / answerable if answerable else 1.0, lost)

    def before_gate(q, hits, found) -> bool:
        return not any(hit.relevant for hit in hits)

    def after_gate(gate):
        return lambda q, hits, found: refused(gate, found)

    # Fit on the even questions, check on the odd ones: the most unanswerable refused, no answerable lost.
    grid = [extractive.Gate(s / 100, m / 100, c / 100) for s, m, c in itertools.product(
        range(30, 80, 5), range(0, 45, 5), range(30, 100, 10)) if m <= s]
    grid.append(extractive.Gate(float("inf"), float("-inf"), 0.6))
    fit, check = rows[0::2], rows[1::2]

    def best(candidates, subset):
        def key(gate):
            precision, recall, kept, lost = gate_figures(after_gate(gate), subset)
            return (-lost, recall, precision, -abs(gate.similarity - 0.55), -abs(gate.coverage - 0.6))
        return max(candidates, key=key)

    fitted = best(grid, fit)
    words_only = best([g for g in grid if g.similarity == float("inf")] + [
        extractive.Gate(float("inf"), float("-inf"), c / 100) for c in range(30, 100, 5)], fit)
    table = [["gate", "questions", "precision (nothing relevant)", "recall (nothing relevant)",
              "answerable kept", "answerable lost"]]
    for name, decide in [
        ("before: any passage similar >= RETRIEVAL_MIN_SIMILARITY or a full-text match", before_gate),
        (f"after: chat.extractive GATES (MiniLM: {fmt(model)})", after_gate(model)),
        (f"fitted on even questions: {fmt(fitted)}", after_gate(fitted)),
        (f"words only (uncalibrated models): coverage >= {words_only.coverage:.2f}", after_gate(words_only)),
    ]:
        for label, subset in (("all", rows), ("odd (held out)", check)):
            precision, recall, kept, lost = gate_figures(decide, subset)
            table.append([name, f"{label}: {len(subset)}", f"{precision:.3f}", f"{recall:.3f}", f"{kept:.3f}",
                          str(lost)])

    # The answer's first statement, for the answerable questions the configured gate keeps.
    variants = [("before: quoting answerer (sentences with most question words, in passage order)", None),
                ("after: chat.extractive as configured: rare words + passage similarity, no sentence embedded", 0),
                ("after: chat.extractive, the best 8 sentences also embedded", 8)]
    if args.all_sentences:
        variants.append(("after: chat.extractive, every sentence embedded", 10_000))
    leads = [["answerer", "fixture questions", "SciFact claims", "all answerable", "unanswerable without citations"]]
    misses: list[str] = []
    for name, candidates in variants:
        counts = {"fixture": [0, 0], "scifact": [0, 0], "unanswerable": [0, 0]}
        for question, hits, found in rows:
            if candidates is None:
                kept = [hit for hit in hits if hit.relevant]
                answer = "".join(_answers.quoting_answer(question.text, kept)) if kept else "nothing found"
            else:
                kept = ([hit for hit in hits if hit.relevant] or hits[:1]) if not refused(model, found) else []
                answer = "".join(extractive.answer(question.text, kept, candidates=candidates)) if kept else "nothing"
            count = counts[question.kind]
            count[1] += 1
            if not question.answerable:
                count[0] += not _answers.CITE.search(answer)
                continue
            first, cited = _answers.first_unit(answer)
            if question.kind == "fixture":
                good = question.expect.lower() in first.lower()
            else:
                good = cited is not None and cited <= len(kept) and _answers.external_ids(kept).get(
                    kept[cited - 1].document_id) in question.relevant
            count[0] += good
            if not good and candidates == 0:
                misses.append(f"{question.text[:70]!r} -> {first[:90]!r}")
        answerable = counts["fixture"][0] + counts["scifact"][0], counts["fixture"][1] + counts["scifact"][1]
        leads.append([name, share(counts["fixture"]), share(counts["scifact"]), share(answerable),
                      share(counts["unanswerable"])])
    for line in misses:
        print("miss:", line)
    for table_rows in (table, leads):
        for row in table_rows:
            print(" | ".join(row))
    fixture_count = sum(1 for q in questions if q.kind == "fixture")
    scifact_count = sum(1 for q in questions if q.kind == "scifact")
    unanswerable_count = sum(1 for q in questions if q.kind == "unanswerable")
    _common.report(
        args.quick,
        "Relevance gate and first sentence (bench/relevance_gate.py)",
        f"{fixture_count} fixture questions + {scifact_count} SciFact dev claims (answerable), {unanswerable_count} "
        "unanswerable (off-topic and gibberish), bench/data/gate_questions.json; collections: the relevant "
        f"SciFact abstracts plus {20 if args.quick else 150} others, and the English fixtures; searched across all "
        f"collections, hybrid, RETRIEVAL_K={settings.RETRIEVAL_K}; all-MiniLM-L6-v2 int8 (local). Gate: nothing "
        "relevant unless best similarity >= s, or >= m with the question's words (rarity-weighted) "
        "covered >= c in the passages.",
        table,
        notes=_table_md(leads) + "\nPrecision/recall are of the answer \"nothing relevant\". A fact leads when "
        "the answer's first quoted statement holds it (fixtures: the expected substring; SciFact: quoted from a "
        "relevant abstract per qrels); a question the gate refuses counts as a miss.",
    )


def fmt(gate) -> str:
    return f"s={gate.similarity:.2f}, m={gate.min_similarity:.2f}, c={gate.coverage:.2f}"


def share(count) -> str:
    return f"{count[0]}/{count[1]} ({count[0] / count[1]:.0%})" if count[1] else "-"


def _table_md(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines) + "\n"


def _answers_progress(done: int, total: int) -> None:
    if done % 20 == 0 or done == total:
        print(f"searched {done}/{total}", file=sys.stderr)


if __name__ == "__main__":
    main()
