"""Searching one user's conversations: substring (ILIKE, as chat.conversations does) against full-text search.

Both ways answer "which of my conversations mention this, by title or in any message", newest first, at
most 50, as the sidebar asks. The data: users with many conversations of many messages of generated
prose with a few rare names and codes in it. Each query runs both ways, alternating, on one connection.
Besides the time, the table gives how many conversations each way found: full-text search stems and
drops stop words, so it misses a part of a word or a code that a person remembers.

    .venv/bin/python bench/conversation_search.py            # recorded in bench/BENCHMARKS.md
    .venv/bin/python bench/conversation_search.py --quick    # a smoke run, not recorded
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import _common

WORDS = (
    "travel policy employee train flight hotel night budget manager approval expense report receipt "
    "contractor office meeting client invoice payment quarter review holiday leave salary contract "
    "laptop security password access badge parking lunch team project deadline the of a to for in and is"
).split()
RARE = ["Zanzibar", "INV-2291", "Okonkwo", "kubernetes"]
QUERIES = ["hotel", "approval of the manager", "Zanzibar", "INV-2291", "budg", "nothing-like-this"]


def sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(8, 16))
    if rng.random() < 0.01:
        words.insert(rng.randrange(len(words)), rng.choice(RARE))
    return " ".join(words).capitalize() + "."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, not recorded")
    args = parser.parse_args()
    users_n, conversations_n, messages_n, repeats = (3, 20, 10, 5) if args.quick else (20, 200, 20, 30)

    _common.setup_django("bench_conversation_search")
    from django.contrib.auth import get_user_model
    from django.contrib.postgres.search import SearchQuery, SearchVector
    from django.db import connection
    from django.db.models import Exists, OuterRef, Q

    from chat import conversations
    from chat.models import Conversation, Message

    User = get_user_model()
    User.objects.filter(username__startswith="search-bench-").delete()
    rng = random.Random(7)
    users = [User.objects.create(username=f"search-bench-{n}") for n in range(users_n)]
    for user in users:
        made = Conversation.objects.bulk_create(
            Conversation(owner=user, title=sentence(rng)[:80]) for _ in range(conversations_n)
        )
        Message.objects.bulk_create(
            Message(
                conversation=c,
                role=Message.Role.USER if i % 2 == 0 else Message.Role.ASSISTANT,
                content=" ".join(sentence(rng) for _ in range(1 if i % 2 == 0 else 6)),
            )
            for c in made
            for i in range(messages_n)
        )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE chat_message; ANALYZE chat_conversation")

    def substring(user, query: str) -> list[int]:
        return list(conversations.conversations_for_user(user=user, query=query).values_list("pk", flat=True)[:50])

    def full_text(user, query: str) -> list[int]:
        words = SearchQuery(query, config="english")
        in_messages = Message.objects.annotate(v=SearchVector("content", config="english")).filter(
            conversation=OuterRef("pk"), v=words
        )
        found = Conversation.objects.annotate(t=SearchVector("title", config="english")).filter(
            Q(owner=user), Q(t=words) | Exists(in_messages)
        )
        return list(found.values_list("pk", flat=True)[:50])

    ways = {"substring (ILIKE), chat.conversations": substring, "full-text (to_tsvector @@ plainto_tsquery)": full_text}
    timings: dict[tuple[str, str], list[float]] = {}
    found: dict[tuple[str, str], int] = {}
    for query in QUERIES:
        for name, way in ways.items():
            found[(name, query)] = len(way(users[0], query))  # warm, and the count for user 0
        for repeat in range(repeats):
            user = users[repeat % len(users)]
            for name, way in ways.items() if repeat % 2 == 0 else reversed(ways.items()):
                began = time.perf_counter()
                way(user, query)
                timings.setdefault((name, query), []).append((time.perf_counter() - began) * 1000)
    connection.close()
    User.objects.filter(username__startswith="search-bench-").delete()

    rows = [["query", *(f"{name}: p50 ms" for name in ways), *(f"{name}: found" for name in ways)]]
    for query in QUERIES:
        rows.append(
            [
                f"`{query}`",
                *(f"{statistics.median(timings[(name, query)]):.1f}" for name in ways),
                *(str(found[(name, query)]) for name in ways),
            ]
        )
    _common.report(
        args.quick,
        "Conversation search: substring against full-text (bench/conversation_search.py)",
        f"{users_n} users × {conversations_n} conversations × {messages_n} messages (questions of one sentence, "
        f"answers of six), {repeats} runs per query and way, alternating, users in turn; at most 50 results, "
        f"as the sidebar shows; 'found' counts one user's matches. Load average at the end: "
        f"{os.getloadavg()[0]:.1f} (2 cores shared).",
        rows,
    )


if __name__ == "__main__":
    main()
