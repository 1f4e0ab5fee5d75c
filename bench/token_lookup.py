"""The bearer-token lookup: the raw SQL of core.auth against ``ApiToken.objects.active().select_related("user")``.

Every API request looks its token up. Both ways run in one process, on the same database, the same tokens
(200 users with a token each) and the same sequence of raw tokens; they alternate in blocks of 100 lookups, so
load from anything else on the machine falls on both. Each lookup returns (token id, last used, user), as
core.auth.BearerToken needs; the last-used write, the same for both, is not timed.

    .venv/bin/python bench/token_lookup.py            # recorded in bench/BENCHMARKS.md
    .venv/bin/python bench/token_lookup.py --quick    # a smoke run, not recorded
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import _common

BLOCK = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few lookups, not recorded")
    parser.add_argument("--lookups", type=int, default=20_000, help="per way")
    args = parser.parse_args()
    lookups = 1_000 if args.quick else args.lookups

    _common.setup_django("bench_token_lookup")
    from django.contrib.auth import get_user_model
    from django.db import connection

    from core import auth
    from core.models import ApiToken

    users = get_user_model().objects
    raws = []
    for n in range(200):
        user, _ = users.get_or_create(username=f"token-bench-{n}")
        raws.append(ApiToken.issue(user=user, name="token bench")[1])
    ways = {"raw SQL (core.auth.active_token_sql)": auth.active_token_sql,
            'ORM: ApiToken.objects.active().select_related("user").get(key_hash=...)': auth.active_token_orm}
    for way in ways.values():  # the same answers, and warm: connection open, ORM and SQL caches filled
        for raw in raws[:20]:
            assert way(raw)[2].username.startswith("token-bench-")
        assert way("rag_not-a-token") is None
    sequence = random.Random(7).choices(raws, k=lookups)
    timings: dict[str, list[float]] = {name: [] for name in ways}
    for start in range(0, lookups, BLOCK):
        block = sequence[start:start + BLOCK]
        for name, way in ways.items() if start // BLOCK % 2 == 0 else reversed(ways.items()):
            for raw in block:
                began = time.perf_counter_ns()
                way(raw)
                timings[name].append((time.perf_counter_ns() - began) / 1000)
    connection.close()
    ApiToken.objects.filter(name="token bench").delete()

    rows = [["lookup", "p50 µs", "mean µs", "p95 µs", "lookups"]]
    for name, values in timings.items():
        ordered = sorted(values)
        rows.append([name, f"{statistics.median(values):.0f}", f"{statistics.fmean(values):.0f}",
                     f"{ordered[int(0.95 * (len(ordered) - 1))]:.0f}", str(len(values))])
    for row in rows:
        print(" | ".join(row))
    if args.quick:
        return
    _common.record(
        "Bearer-token lookup: raw SQL vs. the ORM (bench/token_lookup.py)",
        f"one process, DEBUG=true (as the other in-process benches), the same database connection (the app's "
        f"PostgreSQL over its Unix socket), 200 tokens of 200 users, {lookups} lookups per way of the same random "
        f"sequence, alternating in blocks of {BLOCK}. Load average at the end: {os.getloadavg()[0]:.1f} "
        "(2 cores shared).",
        rows,
    )


if __name__ == "__main__":
    main()
