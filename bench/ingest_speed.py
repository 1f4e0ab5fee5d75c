"""Ingestion at the model's speed: the embedding model alone vs. a real Celery worker, on the same chunk texts.

    python bench/ingest_speed.py [--abstracts 300] [--small 40] [--rounds 2] [--threads 1]
                                 [--before PATH] [--quick]

Two workloads, each measured both ways in the same run, in alternating rounds (the machine is shared:
a round's ratio compares neighbours in time; the table gives the median round):

- a long document: ``--abstracts`` SciFact abstracts run together as one ``.txt`` upload;
- small documents: ``--small`` abstracts of one chunk each, one ``.txt`` upload each, where the fixed cost
  of a task (Celery, the status writes, the store's transaction) weighs most.

*Model alone*: a fresh process with the worker's settings (``EMBEDDING_THREADS``, ``EMBEDDING_BATCH_TOKENS``)
loads the backend the worker uses (``embeddings.get_backend()``) and embeds the exact chunk texts the
pipeline makes of those uploads (its own parse and chunking): the long document's in one call (the model
at its best: one length sort over all of them), the small documents one call each (as a worker must).
*Worker*: ``celery -A ragsite worker --concurrency 1`` (one process, on this run's own queues), warmed
up (two small documents and the long one, as the model alone is warmed on the long one's chunks), timed
from the task's sending to the document's ``finished_at`` (upload → ready: parse, chunk, embed, store,
status). Its peak RSS is the worker child's ``VmHWM`` after all rounds. CPU seconds are the
process's own (user + system), less sensitive than wall time to other work on the machine.

``--before PATH`` also measures a worker started from another checkout of this repository (the same
database and virtualenv), e.g. ``git worktree add /tmp/before <commit>``: before and after in one run.
Appends one table to bench/BENCHMARKS.md and ends with one line of key=value figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

DATABASE = "ragbench_ingest_speed"
# A Redis of its own by default (override with BENCH_REDIS_URL): started here when none answers.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
QUEUE = f"ragbench-ingest-speed-{os.getpid()}"
MAX_CHUNK_TOKENS = 254
STORED = re.compile(r"document (?P<id>\d+) stored: (?P<fields>.*)$")


def proc_status(pid: int, field: str) -> float:
    """A ``/proc/<pid>/status`` size (``VmHWM``: peak RSS, ``VmRSS``) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise LookupError(field)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------------------------
# the model alone (a child process)


def model_child(texts_file: str) -> None:
    """Load the worker's backend, embed the long document's texts in one call and each small one alone."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
    sys.path.insert(0, str(_common.ROOT))
    import django

    django.setup()
    import documents.pipeline  # noqa: F401  (what a worker process has imported)
    from documents import embeddings

    workload = json.loads(Path(texts_file).read_text())
    backend = embeddings.get_backend()
    backend.embed_documents(workload["long"])  # warm, as a worker that has run before is
    figures: dict[str, object] = {}
    for name in ("long", "small"):
        texts = workload[name]
        cpu, started = cpu_seconds(os.getpid()), time.perf_counter()
        if name == "long":
            backend.embed_documents(texts)
        else:
            for text in texts:
                backend.embed_documents([text])
        figures[name] = {"seconds": time.perf_counter() - started, "cpu": cpu_seconds(os.getpid()) - cpu}
    figures["peak_mb"] = proc_status(os.getpid(), "VmHWM")
    print(json.dumps(figures))


def model_alone(texts_file: Path, environment: dict) -> dict:
    output = subprocess.run([sys.executable, __file__, "--model-child", str(texts_file)], env=environment,
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------------------
# the worker


class Worker:
    """One ``celery -A ragsite worker`` with one prefork process, on this run's queues, from ``root``."""

    def __init__(self, name: str, root: Path, environment: dict, log: Path):
        self.log, self.queue = log, f"{QUEUE}-{name}"  # a queue of its own: no other worker takes its tasks
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "ragsite", "worker", "--pool", "prefork", "--concurrency", "1",
             "--queues", self.queue, "--hostname", f"bench-speed-{name}-{os.getpid()}@%h",
             "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=root, env=environment, stdout=log.open("w"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 180
        while " ready." not in log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit(f"the Celery worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stored(self, ids: list[int]) -> list[dict[str, float]]:
        """The figures of every line ``documents.pipeline`` logged for these documents (one per run)."""
        wanted, found = {str(document_id) for document_id in ids}, []
        for line in self.log.read_text().splitlines():
            match = STORED.search(line)
            if match and match["id"] in wanted:
                pairs = (pair.split("=") for pair in match["fields"].split())
                found.append({key: float(value) for key, value in pairs})
        return found

    def child(self) -> int:
        import psutil

        children = psutil.Process(self.process.pid).children()
        if len(children) != 1:
            sys.exit(f"expected one worker child process, found {len(children)}")
        return children[0].pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def reset(ids: list[int]) -> None:
    """The documents queued again, without chunks: every round starts from the same state."""
    from documents.models import Chunk, Document

    Chunk.objects.filter(document_id__in=ids).delete()
    Document.objects.filter(pk__in=ids).update(status=Document.Status.QUEUED, progress=0.0, chunk_count=0,
                                               error="", started_at=None, finished_at=None)


def through_worker(worker: Worker, ids: list[int], timeout: float = 7200) -> dict:
    """Send the documents' tasks at once; seconds from sending to the last one ready, and the child's CPU."""
    from django.db.models import Max
    from django.utils import timezone

    from documents.models import Document
    from documents.queue import publish_ingestion

    reset(ids)
    child = worker.child()
    cpu, sent = cpu_seconds(child), timezone.now()
    for document_id in ids:
        publish_ingestion(document_id, queue=worker.queue)
    documents = Document.objects.filter(pk__in=ids)
    deadline = time.monotonic() + timeout
    while documents.exclude(status__in=[Document.Status.READY, Document.Status.FAILED]).exists():
        if time.monotonic() > deadline:
            sys.exit(f"documents not finished after {timeout:.0f} s (see {worker.log})")
        time.sleep(0.2)
    if documents.exclude(status=Document.Status.READY).exists():
        sys.exit(f"a document failed: {list(documents.exclude(status=Document.Status.READY).values('error'))}")
    finished = documents.aggregate(Max("finished_at"))["finished_at__max"]
    return {"seconds": (finished - sent).total_seconds(), "cpu": cpu_seconds(child) - cpu}


# --------------------------------------------------------------------------------------------------------------
# the workload


def workload(abstracts: int, small: int) -> tuple[str, list[str]]:
    """The long document's text and the small documents' texts (abstracts of one chunk each, not in the long one)."""
    from documents.chunking import count_tokens

    rows = [json.loads(line) for line in _common.require_shared("data/scifact/corpus.jsonl").open(encoding="utf-8")
            if line.strip()]
    as_text = [f"{(row.get('title') or '').strip()}\n\n{row.get('text', '')}".strip() + "\n" for row in rows]
    long_text = "\n".join(as_text[:abstracts])
    singles = [text for text in as_text[abstracts:] if count_tokens(text) <= MAX_CHUNK_TOKENS - 20][:small]
    return long_text, singles


def chunk_texts(document) -> list[str]:
    """What the pipeline embeds for this document: its own parse and chunking."""
    from documents.chunking import chunk_sections
    from documents.pipeline import local_copy, parse_document

    with local_copy(document) as path:
        sections = parse_document(document=document, path=path)
    return [draft.embedding_text for draft in chunk_sections(sections)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--abstracts", type=int, default=300, help="abstracts run together in the long document")
    parser.add_argument("--small", type=int, default=40, help="small documents (one chunk each)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="EMBEDDING_THREADS of both (1: make run's per process)")
    parser.add_argument("--before", type=Path, help="another checkout whose worker is measured too")
    parser.add_argument("--label", default="", help="added to the title in BENCHMARKS.md")
    parser.add_argument("--quick", action="store_true", help="a few abstracts, one round: not recorded (CI)")
    parser.add_argument("--model-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model_child:
        model_child(args.model_child)
        return
    if args.quick:
        args.abstracts, args.small, args.rounds = 6, 4, 1

    media = Path(tempfile.mkdtemp(prefix="ingest-speed-media-"))
    settings_environment = {
        "EMBEDDING_BACKEND": "local", "EMBEDDING_THREADS": str(args.threads), "REDIS_URL": REDIS_URL,
        "MEDIA_ROOT": str(media), "LOG_LEVEL": "WARNING", "DEBUG": "false",
        "SECRET_KEY": "benchmark-only-not-a-secret",
    }
    _common.setup_django(DATABASE, **settings_environment)
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.files.base import ContentFile

    from documents import services
    from documents.models import Document
    from ragsite.celery import app

    _common.ensure_redis(REDIS_URL)
    owner, _ = get_user_model().objects.get_or_create(username="bench")
    Document.objects.all().delete()
    collection = services.collection_for_upload(user=owner, name="ingest-speed")

    def upload(text: str, name: str) -> Document:
        return services.document_create(owner=owner, collection=collection, file=ContentFile(text.encode()),
                                        filename=f"{name}.txt", title=name, enqueue=False)

    long_text, singles = workload(args.abstracts, args.small)
    long_document = upload(long_text, "long")
    small_documents = [upload(text, f"small-{index}") for index, text in enumerate(singles)]
    warm_up = [upload(f"{text}\n(warm-up)\n", f"warm-up-{index}") for index, text in enumerate(singles[:2])]
    texts = {"long": chunk_texts(long_document),
             "small": [text for document in small_documents for text in chunk_texts(document)]}
    if len(texts["small"]) != len(small_documents):
        sys.exit("a small document is not one chunk")
    texts_file = media / "texts.json"
    texts_file.write_text(json.dumps(texts))
    print(f"long document: {len(long_text) / 1e6:.2f} MB, {len(texts['long'])} chunks; "
          f"{len(small_documents)} small documents", flush=True)

    environment = {**os.environ, "LOG_LEVEL": "INFO", "DJANGO_SETTINGS_MODULE": "ragsite.settings"}
    trees = {"worker": _common.ROOT}
    if args.before:
        trees["worker, before"] = args.before.resolve()
    rounds: list[dict] = []
    peaks: dict[str, float] = {}
    in_task: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ingest-speed-") as folder:
        workers = {name: Worker(name.replace(", ", "-"), root, environment, Path(folder) / f"{index}.log")
                   for index, (name, root) in enumerate(trees.items())}
        try:
            for worker in workers.values():
                through_worker(worker, [document.pk for document in warm_up])
                # Warmed as the model alone is (on the long document's chunks): a worker that has run before has
                # embedded batches of that size. Without it the first round's worker ran 0.80x the model and the
                # second's 0.94-0.97x, in two runs (2026-12-01).
                through_worker(worker, [long_document.pk])
            for number in range(args.rounds):
                measured = {"model alone": model_alone(texts_file, environment)}
                # Every other round in the other order: no way always follows the same one.
                for name, worker in list(workers.items())[:: 1 if number % 2 == 0 else -1]:
                    measured[name] = {"long": through_worker(worker, [long_document.pk]),
                                      "small": through_worker(worker, [d.pk for d in small_documents])}
                rounds.append(measured)
                print(f"round {number + 1}: " + "; ".join(
                    f"{name} {len(texts['long']) / m['long']['seconds']:.1f} chunks/s, "
                    f"{len(small_documents) / m['small']['seconds']:.2f} docs/s" for name, m in measured.items()),
                    flush=True)
            peaks = {name: proc_status(worker.child(), "VmHWM") for name, worker in workers.items()}
            # Where a small document's time goes outside the model: in document_ingest, or around it (Celery).
            for name, worker in workers.items():
                lines = worker.stored([document.pk for document in small_documents])
                in_task[name] = 1000 * statistics.mean(line["seconds"] - line["embed"] for line in lines)
        finally:
            for worker in workers.values():
                worker.stop()
            for worker in workers.values():
                app.connection().default_channel.client.delete(worker.queue)  # type: ignore[attr-defined]
            Document.objects.all().delete()
            subprocess.run(["rm", "-rf", str(media)], check=False)
    peaks["model alone"] = statistics.median(r["model alone"]["peak_mb"] for r in rounds)
    report(args, texts, rounds, peaks, in_task, settings)


def report(args, texts: dict, rounds: list[dict], peaks: dict, in_task: dict, settings) -> None:
    names = list(rounds[0])
    counts = {"long": len(texts["long"]), "small": len(texts["small"])}

    def median(name: str, part: str, key: str) -> float:
        return statistics.median(r[name][part][key] for r in rounds)

    def ratio(name: str, part: str, key: str = "seconds") -> float:
        """Median over rounds of model ÷ this (the model's speed is 1.0)."""
        return statistics.median(r["model alone"][part][key] / r[name][part][key] for r in rounds)

    table = [["workload", "way", "per second", "÷ model alone (wall)", "÷ model alone (CPU)", "ms per document",
              "of which in the task, not embedding", "peak RSS (MB)"]]
    for part, unit in (("long", "chunks"), ("small", "docs")):
        what = f"long document ({counts['long']:,} chunks)" if part == "long" else f"{counts['small']} small documents"
        for name in names:
            seconds = median(name, part, "seconds")
            table.append([
                what, f"**{name}**" if name == "worker" else name, f"{counts[part] / seconds:.2f} {unit}/s",
                f"{ratio(name, part):.2f}", f"{ratio(name, part, 'cpu'):.2f}",
                f"{1000 * seconds / (1 if part == 'long' else counts[part]):.0f}",
                f"{in_task[name]:.0f}" if part == "small" and name in in_task else "",
                f"{peaks[name]:.0f}" if part == "long" else "",
            ])
    fixed = {name: 1000 * (median(name, "small", "seconds") - median("model alone", "small", "seconds"))
             / counts["small"] for name in names if name != "model alone"}
    figures = {"long_ratio": ratio("worker", "long"), "long_cpu_ratio": ratio("worker", "long", "cpu"),
               "worker_peak_mb": peaks["worker"], "small_docs_per_s": counts["small"] / median("worker", "small",
                                                                                              "seconds"),
               "fixed_ms_per_task": fixed["worker"], "in_task_ms": in_task["worker"]}
    if "worker, before" in fixed:
        figures["before_fixed_ms_per_task"] = fixed["worker, before"]
        figures["before_in_task_ms"] = in_task["worker, before"]
        figures["before_small_docs_per_s"] = counts["small"] / median("worker, before", "small", "seconds")
    settings_line = (
        f"{args.abstracts} SciFact abstracts as one .txt upload, and {counts['small']} abstracts of one chunk as one "
        f"upload each; all-MiniLM-L6-v2 int8, local backend, EMBEDDING_THREADS={args.threads}, "
        f"EMBEDDING_BATCH_TOKENS={settings.EMBEDDING_BATCH_TOKENS}, EMBEDDING_BATCH_SIZE="
        f"{settings.EMBEDDING_BATCH_SIZE}, chunks of {settings.CHUNK_SIZE_TOKENS} tokens; one `celery worker "
        f"--concurrency 1` process; the median of {len(rounds)} alternating rounds; DEBUG=false."
    )
    goal_met = figures["long_ratio"] >= 0.9 and peaks["worker"] <= 600
    notes = (
        f"Goal (worker end to end ≥ 0.9× the model alone on the same chunk texts, peak RSS ≤ 600 MB): "
        f"{'met' if goal_met else 'not met'}: {figures['long_ratio']:.2f}× (wall; {figures['long_cpu_ratio']:.2f}× in "
        f"CPU seconds), {peaks['worker']:.0f} MB. Small documents: {figures['small_docs_per_s']:.2f} documents/s "
        f"through the worker; the fixed cost of a task (worker ms per document − the model's) is "
        f"{fixed['worker']:.0f} ms ({in_task['worker']:.0f} ms of it in `document_ingest` outside the model, the "
        "rest Celery's)" + (f", {fixed['worker, before']:.0f} ms before ({in_task['worker, before']:.0f} ms)"
                             if "worker, before" in fixed else "")
        + ". *÷ model alone* is the model's seconds over this way's (1.00: as fast as the model alone); *per "
        "second* and *ms per document* are the median round's; *in the task, not embedding* is the mean of "
        "`documents.pipeline`'s line per stored document (its seconds − its embed seconds), every round."
    )
    title = ("Ingestion at the model's speed: the model alone vs. a Celery worker, same chunk texts "
             "(bench/ingest_speed.py)")
    if args.label:
        title += f", {args.label}"
    _common.report(args.quick, title, settings_line, table, notes)
    print(" ".join(f"{key}={value:.2f}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
