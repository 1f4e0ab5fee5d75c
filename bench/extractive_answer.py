"""Latency of the extractive answer for 6 passages: chat.extractive against the previous quoting answerer.

    python bench/extractive_answer.py [--quick] [--rounds N]

The passages are what the chat retrieves (hybrid, RETRIEVAL_K=6, across all collections) for the
SciFact claims and fixture questions of bench/data/gate_questions.json, on the database bench/_answers.py
loads. Timed: the answerer alone, on top of retrieval (the question's passages are fetched once, before
the clock). Interleaved rounds in one process, the local all-MiniLM-L6-v2 int8 model warmed up first.
Goal (issue 12): at most 50 ms added for 6 passages.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _answers  # noqa: E402
import _common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 questions, 1 round, 20 distractors")
    parser.add_argument("--questions", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--all-sentences", action="store_true", help="also embed every sentence (slow here)")
    args = parser.parse_args()
    user, questions = _answers.setup(claims=3 if args.quick else None, distractors=20 if args.quick else 150)
    from django.conf import settings

    from chat import extractive
    from documents import embeddings
    from documents import search as retrieval

    answerable = [q for q in questions if q.answerable][: 3 if args.quick else args.questions]
    rounds = 1 if args.quick else args.rounds
    passages = [retrieval.search(user=user, query=q.text, k=settings.RETRIEVAL_K) for q in answerable]
    embeddings.get_backend().embed_documents(["warm-up"])
    methods = {
        "before: quoting answerer (words only)": lambda q, hits: "".join(_answers.quoting_answer(q, hits)),
        "after: chat.extractive as configured (no sentence embedded)":
            lambda q, hits: "".join(extractive.answer(q, hits)),
        "after: chat.extractive, the best 8 sentences embedded":
            lambda q, hits: "".join(extractive.answer(q, hits, candidates=8)),
        "after: chat.extractive, every sentence embedded":
            lambda q, hits: "".join(extractive.answer(q, hits, candidates=10_000)),
    }
    if not args.all_sentences:
        methods.pop("after: chat.extractive, every sentence embedded")
    load = os.getloadavg()[0]
    times: dict[str, list[float]] = {name: [] for name in methods}
    sentences = [len(extractive.statements(hits)) for hits in passages]
    for round_ in range(rounds):
        for question, hits in zip(answerable, passages, strict=True):
            names = list(methods) if round_ % 2 == 0 else list(reversed(methods))
            for name in names:
                started = time.perf_counter()
                methods[name](question.text, hits)
                times[name].append((time.perf_counter() - started) * 1000)
    table = [["answerer", "p50 ms", "p95 ms", "mean ms"]]
    for name, values in times.items():
        values.sort()
        table.append([name, f"{statistics.median(values):.1f}", f"{values[int(0.95 * (len(values) - 1))]:.1f}",
                      f"{statistics.fmean(values):.1f}"])
        print(" | ".join(table[-1]))
    _common.report(
        args.quick,
        "Extractive answer latency, 6 passages (bench/extractive_answer.py)",
        f"{len(answerable)} answerable questions of bench/data/gate_questions.json × {rounds} interleaved rounds; "
        f"their RETRIEVAL_K={settings.RETRIEVAL_K} passages (hybrid, all collections) fetched before timing; "
        f"{statistics.fmean(sentences):.0f} statements per answer on average; all-MiniLM-L6-v2 int8 (local), "
        f"EMBEDDING_THREADS={settings.EMBEDDING_THREADS}; load average at the start: {load:.1f} (2 shared cores).",
        table,
    )


if __name__ == "__main__":
    main()
