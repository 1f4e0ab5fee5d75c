"""The goals summary at the top of bench/BENCHMARKS.md is generated from the newest runs, never kept by hand."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import _summary  # noqa: E402

STORE_RUN = """
## Storing 40,000 chunks: ours vs. raw COPY of the same searchable state (bench/ingest_store.py), {label}

| HNSW index while loading | rows | way | indexes on the table | seconds | rows/s | ours ÷ this |
|---|---|---|---|---|---|---|
| absent (empty table) | 40,000 | **ours**: `store_chunks` | x | 40.0 | {ours} | — |
| absent (empty table) | 8,000 | ours, the statistics trigger disabled: **no statistics** | x | 4.0 | 2,000 | 0.35× |
| absent (empty table) | 40,000 | raw COPY + statistics: **the limit** | x | 30.0 | 1,333 | {limit}× |
| absent (empty table) | 8,000 | raw COPY, **no statistics** | x | 3.2 | 2,500 | 0.28× |
| absent (empty table) | 8,000 | raw COPY, **without the full-text column** | x | 1.0 | 8,000 | 0.09× |
| absent (empty table) | 40,000 | langchain-postgres | x | 50.0 | 800 | {peer}× |
| absent (empty table) | 8,000 | langchain-postgres, one call per document of 50 chunks | x | 12.5 | 640 | 1.09× |
"""

HAND_KEPT = """# Benchmarks

Intro.

## Where the goals stand (summary of the newest runs below, 2026-11-25)

| goal | measured | |
|---|---|---|
| store ≥ 0.8× raw binary COPY | 0.83× | met |
"""


def test_the_summary_replaces_a_hand_kept_one_and_follows_the_newest_run(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(HAND_KEPT + STORE_RUN.format(label="before", ours="700", limit="0.52", peer="0.88"))
    _summary.write(path)
    text = path.read_text()
    assert "summary of the newest runs below, 2026-11-25" not in text and text.startswith("# Benchmarks\n\nIntro.")
    line = next(line for line in text.splitlines() if line.startswith("| store"))
    assert "0.52× the raw COPY of the same searchable state" in line and "**not met**" in line and "before" in line
    # The peer at the worker's unit is reported beside the batched one, which alone decides the goal.
    assert "langchain-postgres 800 rows/s (ours 0.88× its speed)" in line
    assert "langchain-postgres one call per document 640 rows/s (ours 1.09×)" in line
    # What the statistics cost: ours without them against the peer, and the chunks alone (each its own row).
    assert "ours with no statistics at all 2,000 rows/s (2.50× langchain-postgres" in line
    assert "0.28× the chunks alone (2,500 rows/s), 8,000 rows/s without their full-text column" in line

    with path.open("a") as handle:
        handle.write(STORE_RUN.format(label="after", ours="1,100", limit="0.83", peer="1.38"))
    _summary.write(path)
    _summary.write(path)  # idempotent: one summary, regenerated in place
    text = path.read_text()
    assert text.count(_summary.BEGIN) == 1 and text.count("## Where the goals stand") == 1
    line = next(line for line in text.splitlines() if line.startswith("| store"))
    assert "0.83×" in line and "| met |" in line and "after" in line
    assert "| retrieval quality: hybrid ≥ 0.70 nDCG@10 (SciFact dev) | no run recorded |" in text
