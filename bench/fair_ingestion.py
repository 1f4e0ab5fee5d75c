"""Fair ingestion: how long a one-page PDF takes from upload to *ready* while two large texts ingest.

    python bench/fair_ingestion.py [--small 20] [--large-mb 3] [--quick]

Two configurations of real ``celery -A ragsite worker`` processes on the same machine, one after the other,
each with the same two large plain-text documents (SciFact abstracts run together, ``--large-mb`` each)
uploaded first, then ``--small`` one-page PDFs uploaded one at a time, ``--gap`` seconds apart, once both
large documents are processing:

- **before** (main's code path): one queue (``INGEST_LARGE_BYTES=0``), one worker with 2 pool processes
  consuming it, as ``make run`` started it before this change;
- **after**: documents over ``INGEST_LARGE_BYTES`` go to the large queue; the workers are the ones
  ``make run`` starts now (``ragsite.launcher.worker_commands``): one process taking large documents first
  and small ones when none waits, one process taking small documents only.

Both use 2 processes with ``EMBEDDING_THREADS=1`` each (cores ÷ processes, as ``make run`` gives them). The
figure is each PDF's ``finished_at − created_at`` (upload to ready), p50/p95/max; the large documents are
cancelled once every PDF is ready (their own time is not the point here; ``bench/ingest_pipeline.py``
measures throughput). The full run embeds with the product's default model (all-MiniLM-L6-v2 int8, local
backend, offline); ``--quick`` (CI) uses the hashing backend, 0.4 MB texts (with
``INGEST_LARGE_BYTES`` at 256 KB), 3 PDFs and prints only.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

DATABASE = "ragbench_fair_ingestion"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
QUEUE = f"ragbench-fair-{os.getpid()}"


def _die_with(pid: int):
    from ragsite.launcher import _die_with

    return _die_with(pid)  # a worker is sent SIGTERM when this script dies, however it dies


class Workers:
    """Celery worker processes (their own process groups) consuming this run's queues."""

    def __init__(self, commands: list[list[str]], folder: Path, environment: dict[str, str]):
        self.logs = [folder / f"worker-{index}.log" for index in range(len(commands))]
        self.processes = [
            subprocess.Popen(command + ["--without-gossip", "--without-mingle", "--without-heartbeat"],
                             cwd=_common.ROOT, env=environment, stdout=log.open("w"), stderr=subprocess.STDOUT,
                             start_new_session=True, preexec_fn=_die_with(os.getpid()))
            for command, log in zip(commands, self.logs, strict=True)
        ]
        deadline = time.monotonic() + 120
        while not all(" ready." in log.read_text() for log in self.logs):
            if any(p.poll() is not None for p in self.processes) or time.monotonic() > deadline:
                self.stop()
                sys.exit("a Celery worker did not start:\n" + "\n".join(log.read_text()[-2000:] for log in self.logs))
            time.sleep(0.2)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def large_texts(corpus: Path, size: int) -> list[bytes]:
    """Two different texts of ``size`` bytes: consecutive SciFact abstracts, as chapters of a long report."""
    texts, parts, length = [], [], 0
    with corpus.open(encoding="utf-8") as rows:
        for line in rows:
            row = json.loads(line)
            part = f"{row.get('title', '').strip()}\n\n{row.get('text', '').strip()}\n\n"
            parts.append(part)
            length += len(part.encode())
            if length >= size:
                texts.append("".join(parts).encode()[:size])
                parts, length = [], 0
                if len(texts) == 2:
                    return texts
    sys.exit(f"{corpus} has less than {2 * size:,} bytes of text")


def one_page_pdf(index: int, text: str) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    pdf.add_page()
    pdf.multi_cell(0, 6, f"Memo {index}. " + text.encode("latin-1", "replace").decode("latin-1")[:2500])
    buffer = io.BytesIO()
    buffer.write(pdf.output())
    return buffer.getvalue()


def run(name: str, commands: list[list[str]], large_bytes: int, bigs: list[bytes], pdfs: list[bytes],
        gap: float, folder: Path, environment: dict[str, str], timeout: float) -> dict:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.files.base import ContentFile

    from documents import services
    from documents.models import Document
    from documents.services import collection_for_upload
    from ragsite.celery import app

    settings.INGEST_LARGE_BYTES = large_bytes  # the sending side decides the queue (documents.queue)
    Document.objects.all().delete()
    app.connection().default_channel.client.delete(QUEUE, QUEUE + ".large")  # type: ignore[attr-defined]
    owner = get_user_model().objects.get_or_create(username="bench")[0]
    collection = collection_for_upload(user=owner, name=f"fair-{name}")
    (folder / name).mkdir()
    workers = Workers(commands, folder / name, environment)
    try:
        # Warm-up: every process loads the model with its first task (not timed).
        warm = [services.document_create(owner=owner, collection=collection, file=ContentFile(pdf, name=f"w{i}.pdf"))
                for i, pdf in enumerate(pdfs[:2])]
        wait(lambda: all(d.status == "ready" for d in Document.objects.filter(pk__in=[w.pk for w in warm])), 300)
        time.sleep(1)
        big = [services.document_create(owner=owner, collection=collection,
                                        file=ContentFile(text, name=f"novel-{i}.txt")) for i, text in enumerate(bigs)]
        # Both taken by a process (before) or one taken, the other waiting its turn (after).
        wait(lambda: Document.objects.filter(pk__in=[b.pk for b in big], status="processing").exists(), 300)
        time.sleep(1)
        processing = Document.objects.filter(pk__in=[b.pk for b in big], status="processing").count()
        print(f"  {name}: {processing} large document(s) processing; uploading {len(pdfs) - 2} one-page PDFs",
              flush=True)
        small = []
        for i, pdf in enumerate(pdfs[2:]):
            small.append(services.document_create(owner=owner, collection=collection,
                                                  file=ContentFile(pdf, name=f"memo-{i}.pdf")).pk)
            time.sleep(gap)
        wait(lambda: not Document.objects.filter(pk__in=small).exclude(status__in=["ready", "failed"]).exists(),
             timeout)
        for document in Document.objects.filter(pk__in=[b.pk for b in big]):
            services.document_cancel(document=document, actor=owner)
    finally:
        workers.stop()
    rows = Document.objects.filter(pk__in=small)
    if rows.exclude(status="ready").exists():
        sys.exit(f"{name}: some PDFs did not end ready: {list(rows.values_list('status', 'error'))}")
    latencies = sorted((d.finished_at - d.created_at).total_seconds() for d in rows if d.finished_at)
    return {"name": name, "latencies": latencies}


def without_beat(command: list[str]) -> list[str]:
    if "-B" not in command:
        return command
    at = command.index("-B")
    rest = command[at + 1 :]
    if rest[:1] == ["--schedule"]:
        rest = rest[2:]
    return command[:at] + rest


def wait(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            sys.exit(f"not done after {timeout:.0f} s")
        time.sleep(0.2)


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=20, help="one-page PDFs timed (default 20)")
    parser.add_argument("--large-mb", type=float, default=3.0, help="size of each of the two large texts")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between two PDF uploads")
    parser.add_argument("--quick", action="store_true", help="hashing backend, 0.4 MB texts, 3 PDFs (CI)")
    args = parser.parse_args()
    if args.quick:
        args.small, args.large_mb, args.gap = 3, 0.4, 0.2
    corpus = _common.require_shared("data/scifact/corpus.jsonl")
    media = Path(tempfile.mkdtemp(prefix="fair-ingestion-media-"))
    backend = "hashing" if args.quick else "local"
    environment = {"EMBEDDING_BACKEND": backend, "REDIS_URL": REDIS_URL, "MEDIA_ROOT": str(media),
                   "LOG_LEVEL": "WARNING", "DEBUG": "false", "SECRET_KEY": "benchmark-only-not-a-secret"}
    _common.setup_django(DATABASE, **environment)
    from django.conf import settings

    from ragsite import launcher

    if args.quick:
        settings.INGEST_LARGE_BYTES = 256 * 1024
    from ragsite.celery import app

    _common.ensure_redis(REDIS_URL)
    app.conf.task_default_queue = QUEUE
    worker_env = {**os.environ, "EMBEDDING_THREADS": "1", "DJANGO_SETTINGS_MODULE": "ragsite.settings"}
    bigs = large_texts(corpus, int(args.large_mb * 1024 * 1024))
    with corpus.open(encoding="utf-8") as rows:
        abstracts = [json.loads(line)["text"] for line in itertools.islice(rows, args.small + 2)]
    pdfs = [one_page_pdf(i, text * 3) for i, text in enumerate(abstracts)]
    celery = [sys.executable, "-m", "celery", "-A", "ragsite", "worker", "--loglevel", "INFO"]
    before = [[*celery, "-n", f"{QUEUE}@%h", "-Q", QUEUE, "--concurrency", "2"]]  # main's `make run` worker
    # The workers `make run` starts now, on this run's queues, without their beat (no sweeps here).
    after = [without_beat(command) for _, command in launcher.worker_commands(sys.executable, 2, media, queue=QUEUE)]
    timeout = 120 if args.quick else 3600
    results = []
    with tempfile.TemporaryDirectory(prefix="fair-ingestion-") as folder:
        try:
            for name, commands, large_bytes in (("before", before, 0), ("after", after, settings.INGEST_LARGE_BYTES)):
                started = time.monotonic()
                results.append(run(name, commands, large_bytes, bigs, pdfs, args.gap, Path(folder), worker_env,
                                   timeout))
                print(f"  {name}: p95 {p95(results[-1]['latencies']):.1f} s ({time.monotonic() - started:.0f} s)",
                      flush=True)
        finally:
            from documents.models import Document

            app.connection().default_channel.client.delete(QUEUE, QUEUE + ".large")  # type: ignore[attr-defined]
            Document.objects.all().delete()
            subprocess.run(["rm", "-rf", str(media)], check=False)
    table = [["configuration", "PDFs", "p50 s", "p95 s", "max s"]]
    labels = {"before": "before: one queue, 1 worker × 2 processes (main)",
              "after": "after: large queue + a process for small documents only"}
    for result in results:
        values = result["latencies"]
        table.append([labels[result["name"]], str(len(values)), f"{statistics.median(values):.1f}",
                      f"{p95(values):.1f}", f"{max(values):.1f}"])
    settings_line = (
        f"two {args.large_mb:g} MB plain texts (SciFact abstracts run together) uploaded first; once they are "
        f"being processed, {args.small} one-page PDFs uploaded {args.gap:g} s apart; time from upload to ready of each "
        f"PDF. Embedding: {'hashing' if args.quick else 'all-MiniLM-L6-v2 int8, local backend (the default)'}, "
        f"EMBEDDING_THREADS=1 per process, 2 processes in both; INGEST_LARGE_BYTES={settings.INGEST_LARGE_BYTES:,}."
    )
    notes = ("Before, both processes take a large text and every PDF waits until one of them is done; after, the "
             "large texts go one at a time to one process while the other takes the PDFs as they come.")
    _common.report(args.quick, "Fair ingestion: a one-page PDF while two large texts ingest (bench/fair_ingestion.py)",
                   settings_line, table, notes)
    figures = {f"p95_{r['name']}_s": p95(r["latencies"]) for r in results}
    print(" ".join(f"{key}={value:.1f}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
