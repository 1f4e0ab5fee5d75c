"""The whole ingestion pipeline on SciFact through real Celery workers: 1 worker vs. 2 workers.

    python bench/ingest_pipeline.py [--docs 600 | --all] [--quick]

SciFact abstracts (title + text, one ``.txt`` upload each, as ``import_beir`` stores them) go
through parse → chunk → embed (the offline all-MiniLM-L6-v2 int8 model, local backend) → store in
``celery -A ragsite worker`` processes started here, against the benchmark's own database
(``ragbench_ingest_pipeline``) and its own queue on a dedicated Redis database, so that no other
worker takes its tasks. Two configurations on the same documents, one after the other:

- 1 worker process with ``EMBEDDING_THREADS`` = all cores;
- as many worker processes as cores (2 here), ``EMBEDDING_THREADS=1`` each (what ``make run``
  gives each process: cores ÷ ``WORKER_CONCURRENCY``).

Each worker is warmed up first (every process loads the model on its first task), then all the
documents are queued at once; the clock runs from the first task queued to the last document
finished. Per-stage seconds come from the line ``documents.pipeline`` logs for every stored
document; what the stages do not cover (Celery's dispatch, the status and progress writes,
idle time at the end) is the task overhead: worker processes × elapsed − the stages.

Embedding runs at 2-10 documents/s on this shared 2-core machine, depending on what else runs,
so the whole corpus (5,183 abstracts) twice would take 20-60 minutes: the default is an evenly
spread sample of 600 (4-11 minutes in all), ``--docs N`` or ``--all`` for more. An abstract is 1.7
chunks: the fixed cost of a task (Celery, loading the document, status writes, the store's transaction)
weighs on it as it does not on a report of tens of pages; ``--per-file N`` uploads N abstracts as one
document to measure that case on the same text. Appends one table to bench/BENCHMARKS.md and ends with
one line of key=value figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

DATABASE = "ragbench_ingest_pipeline"
# A Redis database of its own (override with BENCH_REDIS_URL) and a queue named for this run.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
QUEUE = f"ragbench-ingest-pipeline-{os.getpid()}"
STAGES = ("parse", "chunk", "embed", "store")
STORED = re.compile(r"\[[^\]]*/(?P<process>[\w-]+)\] document (?P<id>\d+) stored: (?P<fields>.*)$")


def sample(rows: list[dict], count: int) -> list[dict]:
    """``count`` rows spread evenly over the corpus (its order follows ids, not topics)."""
    if count >= len(rows):
        return rows
    return [rows[index * len(rows) // count] for index in range(count)]


def grouped(rows: list[dict], size: int) -> list[dict]:
    """``size`` abstracts per document: each a section under its title, as a report's chapters are."""
    groups = []
    for start in range(0, len(rows), size):
        part = rows[start : start + size]
        text = "\n\n".join(f"{(row.get('title') or '').strip()}\n\n{row.get('text', '')}" for row in part)
        groups.append({"_id": f"{part[0]['_id']}+{len(part) - 1}", "title": "", "text": text})
    return groups


def create_documents(rows: list[dict], owner, collection) -> list[int]:
    """The uploads, as import_beir makes them (not timed)."""
    from django.core.files.base import ContentFile

    from documents import services

    ids = []
    for row in rows:
        title = (row.get("title") or "").strip()
        body = f"{title}\n\n{row.get('text', '')}".strip() + "\n"
        document = services.document_create(
            owner=owner, collection=collection, file=ContentFile(body.encode("utf-8")),
            filename=f"{row['_id']}.txt", title=title or str(row["_id"]), external_id=str(row["_id"]),
            metadata={"source": "scifact/corpus.jsonl"}, enqueue=False,
        )
        ids.append(document.pk)
    return ids


def reset(ids: list[int]) -> None:
    """Every document queued again, no chunks: the next configuration starts from the same state."""
    from django.db import connection

    from documents.models import Document

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE documents_chunk CASCADE")
    Document.objects.filter(pk__in=ids).update(
        status=Document.Status.QUEUED, progress=0.0, chunk_count=0, error="", started_at=None, finished_at=None,
    )


class Worker:
    """``celery -A ragsite worker`` with ``processes`` prefork processes, on our queue only."""

    def __init__(self, processes: int, threads: int, log: Path, media: Path):
        self.processes, self.log = processes, log
        environment = {
            **os.environ, "EMBEDDING_THREADS": str(threads), "LOG_LEVEL": "INFO", "MEDIA_ROOT": str(media),
            "REDIS_URL": REDIS_URL, "DJANGO_SETTINGS_MODULE": "ragsite.settings",
        }
        self.name = f"bench-pipeline-{os.getpid()}-{processes}@%h"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "ragsite", "worker", "--pool", "prefork",
             "--concurrency", str(processes), "--queues", QUEUE, "--hostname", self.name, "--loglevel", "INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=_common.ROOT, env=environment, stdout=log.open("w"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while " ready." not in log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit(f"the Celery worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # warm shutdown: children finish and exit
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stored_lines(self) -> dict[int, dict]:
        """Per document: the process that stored it and the seconds of each stage, from the log."""
        found = {}
        for line in self.log.read_text().splitlines():
            match = STORED.search(line)
            if match:
                fields = dict(pair.split("=") for pair in match["fields"].split())
                found[int(match["id"])] = {"process": match["process"], **{k: float(v) for k, v in fields.items()}}
        return found


def enqueue(ids: list[int]) -> None:
    from documents.tasks import ingest_document

    for document_id in ids:
        ingest_document.apply_async(args=[document_id], queue=QUEUE)


def wait_finished(ids: list[int], timeout: float) -> None:
    from documents.models import Document

    deadline = time.monotonic() + timeout
    pending = Document.objects.filter(pk__in=ids).exclude(status__in=[Document.Status.READY, Document.Status.FAILED])
    while pending.exists():
        if time.monotonic() > deadline:
            sys.exit(f"{pending.count()} documents still not finished after {timeout:.0f} s")
        time.sleep(0.25)


def run_configuration(processes: int, threads: int, ids: list[int], warmup_ids: list[int], folder: Path,
                      media: Path) -> dict:
    from django.db.models import Max, Sum
    from django.utils import timezone

    from documents.models import Document

    reset(ids + warmup_ids)
    worker = Worker(processes, threads, folder / f"worker-{processes}.log", media)
    try:
        # Every process loads the model with its first task: warm them all up before the clock runs.
        for attempt in range(5):
            batch = warmup_ids[attempt * 2 * processes : (attempt + 1) * 2 * processes]
            reset(batch)
            enqueue(batch)
            wait_finished(batch, timeout=300)
            if len({line["process"] for line in worker.stored_lines().values()}) >= processes:
                break
        started = timezone.now()
        enqueue(ids)
        wait_finished(ids, timeout=3600)
        finished = Document.objects.filter(pk__in=ids).aggregate(Max("finished_at"))["finished_at__max"]
    finally:
        worker.stop()
    elapsed = (finished - started).total_seconds()
    documents = Document.objects.filter(pk__in=ids)
    ready = documents.filter(status=Document.Status.READY).count()
    chunks = documents.aggregate(Sum("chunk_count"))["chunk_count__sum"] or 0
    lines = [line for document_id, line in worker.stored_lines().items() if document_id in set(ids)]
    if len(lines) != ready:
        sys.exit(f"{ready} documents ready but {len(lines)} 'stored' lines in {worker.log}")
    stages = {stage: sum(line.get(stage, 0.0) for line in lines) for stage in STAGES}
    in_tasks = sum(line["seconds"] for line in lines)
    process_seconds = processes * elapsed
    return {
        "processes": processes, "threads": threads, "documents": len(ids), "ready": ready, "chunks": chunks,
        "elapsed": elapsed, "stages": stages, "in_tasks": in_tasks, "process_seconds": process_seconds,
        # What the stages do not cover, inside document_ingest (status and progress writes, loading the
        # backend) and outside it (Celery: fetching, acknowledging; a process idle at the end).
        "overhead": process_seconds - sum(stages.values()),
        "overhead_in_tasks": in_tasks - sum(stages.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=600, help="documents: an evenly spread sample of the corpus")
    parser.add_argument("--all", action="store_true", help="all 5,183 abstracts (20-60 minutes here)")
    parser.add_argument("--quick", action="store_true", help="10 documents, 4 to warm up: not recorded (CI)")
    parser.add_argument("--label", default="", help="added to the title in BENCHMARKS.md")
    parser.add_argument("--per-file", type=int, default=1, help="abstracts per uploaded document (default 1)")
    args = parser.parse_args()
    corpus = _common.require_shared("data/scifact/corpus.jsonl")
    media = Path(tempfile.mkdtemp(prefix="ingest-pipeline-media-"))
    environment = {
        "EMBEDDING_BACKEND": "local", "REDIS_URL": REDIS_URL,
        "MEDIA_ROOT": str(media), "LOG_LEVEL": "WARNING",
        # What a production worker runs with: no query log kept per statement.
        "DEBUG": "false", "SECRET_KEY": "benchmark-only-not-a-secret",
    }
    _common.setup_django(DATABASE, **environment)
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from documents.models import Document
    from documents.services import collection_for_upload
    from ragsite.celery import app

    _common.ensure_redis(REDIS_URL)  # set BENCH_REDIS_URL for another server
    rows = [json.loads(line) for line in corpus.open(encoding="utf-8") if line.strip()]
    count = 10 if args.quick else len(rows) if args.all else args.docs
    chosen = sample(rows, count)
    chosen_ids = {row["_id"] for row in chosen}
    warmup_rows = [row for row in rows if row["_id"] not in chosen_ids][: 4 if args.quick else 20]
    if args.per_file > 1:
        chosen, warmup_rows = grouped(chosen, args.per_file), grouped(warmup_rows, 2)
    cores = os.cpu_count() or 1

    owner, _ = get_user_model().objects.get_or_create(username="bench")
    Document.objects.all().delete()
    print(f"creating {len(chosen):,} documents (+{len(warmup_rows)} to warm the workers up) ...", flush=True)
    collection = collection_for_upload(user=owner, name="scifact")
    warmup_ids = create_documents(warmup_rows, owner, collection_for_upload(user=owner, name="warm-up"))
    ids = create_documents(chosen, owner, collection)

    results = []
    with tempfile.TemporaryDirectory(prefix="ingest-pipeline-") as folder:
        try:
            for processes in (1, cores):
                threads = max(1, cores // processes)
                print(f"{processes} worker process(es), EMBEDDING_THREADS={threads} ...", flush=True)
                result = run_configuration(processes, threads, ids, warmup_ids, Path(folder), media)
                results.append(result)
                print(f"  {result['documents'] / result['elapsed']:.2f} docs/s ({result['elapsed']:.0f} s)",
                      flush=True)
        finally:
            app.connection().default_channel.client.delete(QUEUE)  # type: ignore[attr-defined]  # kombu's Redis channel
            Document.objects.all().delete()  # and their files, with the media folder below
            subprocess.run(["rm", "-rf", str(media)], check=False)
    report(args, results, settings)


def report(args, results: list[dict], settings) -> None:
    table = [["worker processes × EMBEDDING_THREADS", "documents (ready)", "chunks", "seconds", "docs/s",
              "parse", "chunk", "embed", "store", "task overhead", "non-embedding ÷ embedding"]]
    figures = {}
    for result in results:
        total = result["process_seconds"]
        stages = result["stages"]
        share = {stage: stages[stage] / total for stage in STAGES}
        non_embedding = (total - stages["embed"]) / stages["embed"]
        table.append([
            f"{result['processes']} × {result['threads']}", f"{result['documents']:,} ({result['ready']:,})",
            f"{result['chunks']:,}", f"{result['elapsed']:.0f}", f"{result['documents'] / result['elapsed']:.2f}",
            *(f"{100 * share[stage]:.1f}%" for stage in STAGES), f"{100 * result['overhead'] / total:.1f}%",
            f"{non_embedding:.3f}",
        ])
        suffix = "1_worker" if result["processes"] == 1 else f"{result['processes']}_workers"
        figures[f"docs_per_s_{suffix}"] = result["documents"] / result["elapsed"]
        figures[f"non_embedding_share_{suffix}"] = non_embedding
    one, many = results[0], results[-1]
    figures["speedup"] = (many["documents"] / many["elapsed"]) / (one["documents"] / one["elapsed"])
    count = results[0]["documents"]
    per_file = getattr(args, "per_file", 1)
    what = (f"{count * per_file:,} SciFact abstracts" if per_file == 1 else
            f"{count:,} documents of {per_file} SciFact abstracts each ({results[0]['chunks'] / count:.1f} chunks)")
    settings_line = (
        f"{what} ({'all' if count * per_file >= 5183 else 'an evenly spread sample'}), one .txt upload "
        f"each; all-MiniLM-L6-v2 int8, local backend (offline), EMBEDDING_BATCH_SIZE="
        f"{settings.EMBEDDING_BATCH_SIZE}, chunks of {settings.CHUNK_SIZE_TOKENS} tokens; "
        "`celery -A ragsite worker --pool prefork` on its own queue, "
        "warmed up (model loaded in every process) before the clock starts; DEBUG=false."
    )
    inside = ", ".join(f"{100 * r['overhead_in_tasks'] / r['process_seconds']:.1f}%" for r in results)
    notes = (
        "Stage shares are of the worker processes' time (processes × elapsed), from the line `documents.pipeline` logs "
        "per stored document: *parse* (small plain text in the worker's process, anything else in a forked child "
        "with its limits), *chunk*, *embed* (the model alone), *store* "
        "(one transaction). *Task overhead* is the rest: loading the document, the status and progress writes, "
        "Celery's fetch and acknowledgement, and a process idle at the end "
        f"({inside} of it inside "
        "`document_ingest`). *Non-embedding ÷ embedding* is everything but the model's time, over the model's time "
        "(the goal: under 0.10)."
    )
    title = "Ingestion pipeline: SciFact through 1 and 2 Celery worker processes (bench/ingest_pipeline.py)"
    if args.label:
        title += f", {args.label}"
    if args.quick:
        print("\n".join(" | ".join(row) for row in table), "\n(--quick: not recorded in BENCHMARKS.md)")
    else:
        _common.record(title, settings_line, table, notes)
    print(" ".join(f"{key}={value:.3f}" if "share" in key else f"{key}={value:.2f}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
