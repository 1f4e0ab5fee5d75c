"""Load: 50 users chatting for 2 minutes while 200 documents ingest in the background.

    flock /tmp/bench.lock .venv/bin/python bench/load.py [--quick] [--users N] [--duration S] [--documents N]

The app is served as ``make run`` serves it: ``uvicorn ragsite.asgi:application`` with ``DATABASE_POOL=true``
and a real ``celery -A ragsite worker --concurrency 2`` (``EMBEDDING_THREADS`` = cores ÷ 2), both started here
on the benchmark's own database (``ragbench_load``) and a Redis database of their own (``BENCH_REDIS_URL``,
default db 13, so that no other worker takes the uploads' tasks). Production settings (``DEBUG=false``), the
rate limits off (``RATE_LIMIT_CHAT= RATE_LIMIT_UPLOAD=``: one benchmark user asks far more than a person).
The language model is bench/chat_stream.py's loopback OpenAI-protocol server in its own process, streaming
``--tokens`` tokens ``--token-delay`` s apart (an answer takes ~1.4 s, as a real one does); embeddings use the
``hashing`` backend, as in bench/chat_stream.py, so the figures are the app's and not a model's.

- **Chat**: ``--users`` signed-in users (each with their own session or API token), half on the chat page
  (``POST /chat/<id>/ask/``, multipart with the form's CSRF token, as the page's script sends it) and half on
  ``POST /v1/chat/completions`` (stream=true); each asks, reads the answer to its end, pauses ``--think``
  seconds (±50%), and asks again, every question in a new conversation, for ``--duration`` seconds. The
  questions are SciFact claims that retrieval finds passages for in 300 SciFact abstracts (or generated policy
  documents without ``$RAG_SHARED_DIR``), the collection of bench/chat_stream.py, shared with every user.
- **Ingestion**: another user uploads ``--documents`` files through ``POST /api/v1/documents`` (PDF, Word,
  HTML, Markdown and text in turn, ~6 abstracts each), spread evenly over the first 75% of the chat, 4 at a
  time, and polls ``GET /api/v1/documents`` once a second as a client following progress does. Upload → ready
  runs from sending the upload to the worker's ``finished_at``.

Errors (expected: 0) are HTTP errors, error events, cut-off streams, client timeouts (120 s), failed uploads
and documents that do not end ready. Appends a table to bench/BENCHMARKS.md (unless ``--quick``) and ends with
one line of key=value figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import chat_stream  # noqa: E402
from chat_stream import ConnectionWatch, Endpoints, free_port, ms, percentile, wait_for  # noqa: E402

DATABASE = "ragbench_load"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
OWNER, UPLOADER = "loadbench", "loadbench-uploader"
INGEST_COLLECTION = "load-ingest"
KINDS = ("pdf", "docx", "html", "md", "txt")
CONTENT_TYPES = {"pdf": "application/pdf", "html": "text/html", "md": "text/markdown", "txt": "text/plain",
                 "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document"}


# ---- setup ------------------------------------------------------------------------------------------------------
def source_texts(count: int) -> list[tuple[str, str]]:
    """(title, text) pairs for the uploads: SciFact abstracts the chat collection does not hold, or generated."""
    corpus = chat_stream.SCIFACT / "corpus.jsonl"
    rows = []
    if corpus.exists():
        with corpus.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle):
                if number >= 1000:  # past the 300 the chat collection imports
                    row = json.loads(line)
                    rows.append((row["title"], row["text"]))
                if len(rows) == count:
                    break
    if len(rows) < count:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "generated.jsonl"
            chat_stream.generated_corpus(path, count)
            rows += [(row["title"], row["text"]) for row in map(json.loads, path.open())][: count - len(rows)]
    return rows


def make_uploads(folder: Path, count: int, per_document: int = 6) -> list[Path]:
    """``count`` genuine files, PDF, Word, HTML, Markdown and text in turn, ``per_document`` abstracts each."""
    from tests import documents_factory as factory

    texts = source_texts(count * per_document)
    paths = []
    for number in range(count):
        kind = KINDS[number % len(KINDS)]
        part = texts[number * per_document:(number + 1) * per_document]
        path = folder / f"load-{number:03d}.{kind}"
        if kind == "pdf":  # the PDF's built-in fonts are Latin-1
            factory.make_pdf(path, [f"{title}\n\n{text}".encode("latin-1", "replace").decode("latin-1")
                                    for title, text in part])
        elif kind == "docx":
            factory.make_docx(path, f"Report {number}", [(title, [text]) for title, text in part])
        elif kind == "html":
            factory.make_html(path, f"Report {number}", part)
        elif kind == "md":
            factory.make_markdown(path, "\n\n".join(f"## {title}\n\n{text}" for title, text in part))
        else:
            factory.make_text(path, "\n\n".join(f"{title}\n{text}" for title, text in part))
        paths.append(path)
    return paths


def session_for(user) -> str:
    """A signed-in session, as the login form would leave it (without paying for the password hash)."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return session.session_key


@dataclass
class ChatUser:
    kind: str  # "page" or "api"
    username: str
    token: str = ""
    session: str = ""
    conversations: list[int] = field(default_factory=list)


def prepare(args) -> tuple[list[ChatUser], str, list[str], str]:
    """Users, sessions, tokens and conversations; the chat collection (imported once, reused by later runs)."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from chat.models import Conversation
    from core.models import ApiToken
    from documents.models import Collection, Document

    users = get_user_model().objects
    owner, _ = users.get_or_create(username=OWNER)
    print("preparing the chat collection (first run: imports it) ...", flush=True)
    questions, corpus = chat_stream.prepare_corpus(owner, 50 if args.quick else chat_stream.DOCUMENTS)
    collection = Collection.objects.get(owner=owner, name=chat_stream.COLLECTION)
    with connection.cursor() as cursor:  # the bench database is ours: start without old chats and uploads
        cursor.execute("TRUNCATE chat_citation, chat_message, chat_conversation")
    uploader, _ = users.get_or_create(username=UPLOADER)
    Document.objects.filter(owner=uploader).delete()
    _, upload_token = ApiToken.issue(user=uploader, name="load bench")

    per_user = int(args.duration / max(args.think * 0.5, 0.2)) + 50  # the most questions one user can ask
    chat_users = []
    for number in range(args.users):
        user, _ = users.get_or_create(username=f"loadbench-{number:02d}")
        collection.members.add(user)
        kind = "api" if number % 2 else "page"
        chat_user = ChatUser(kind, user.username)
        if kind == "api":
            chat_user.token = ApiToken.issue(user=user, name="load bench")[1]
        else:
            chat_user.session = session_for(user)
            chat_user.conversations = [c.pk for c in Conversation.objects.bulk_create(
                Conversation(owner=user) for _ in range(per_user))]
        chat_users.append(chat_user)
    return chat_users, upload_token, questions, corpus


class Processes:
    """The model server, the web server and the worker, each in its own process, logging to ``folder``."""

    def __init__(self, folder: Path, llm_port: int, app_port: int, name: str):
        self.folder = folder
        python = sys.executable
        self.llm = self._start("llm", [python, chat_stream.__file__, "--serve-llm", str(llm_port)])
        self.app = self._start("app", [python, "-m", "uvicorn", "ragsite.asgi:application", "--host", "127.0.0.1",
                                       "--port", str(app_port), "--timeout-graceful-shutdown", "5"],
                               DATABASE_POOL="true")
        # What `make run` starts (ragsite/launcher.py), named so that its log lines are ours.
        self.worker = self._start("worker", [python, "-m", "celery", "-A", "ragsite", "worker", "--loglevel", "INFO",
                                             "--concurrency", "2", "--hostname", name],
                                  EMBEDDING_THREADS=str(max(1, (os.cpu_count() or 1) // 2)), LOG_LEVEL="INFO")

    def _start(self, label: str, command: list[str], **environment: str) -> subprocess.Popen:
        log = self.folder / f"{label}.log"
        return subprocess.Popen(command, cwd=_common.ROOT, env={**os.environ, **environment},
                                stdout=log.open("w"), stderr=subprocess.STDOUT)

    def wait_worker(self, timeout: float = 120) -> None:
        log = self.folder / "worker.log"
        deadline = time.monotonic() + timeout
        while " ready." not in log.read_text():
            if self.worker.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the Celery worker did not start; see {log}:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def tree_cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) of each process with its living children."""
        import psutil

        seconds = {}
        for label, process in (("app", self.app), ("worker", self.worker), ("model", self.llm)):
            try:
                root = psutil.Process(process.pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            # children_*: the processes it has reaped (the worker's parser children, forked per document).
            seconds[label] = sum(sum(p.cpu_times()[:4]) for p in tree if p.is_running())
        own = psutil.Process().cpu_times()
        seconds["client"] = own.user + own.system
        return seconds

    def stop(self) -> None:
        for process in (self.app, self.worker, self.llm):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # the worker's warm shutdown lets its tasks finish
        for process in (self.app, self.worker, self.llm):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


# ---- the load ---------------------------------------------------------------------------------------------------
@dataclass
class Results:
    ttft: dict[str, list[float]] = field(default_factory=lambda: {"page": [], "api": []})
    total: dict[str, list[float]] = field(default_factory=lambda: {"page": [], "api": []})
    errors: dict[str, list[str]] = field(default_factory=lambda: {"page": [], "api": [], "upload": [], "poll": []})
    sent: dict[int, float] = field(default_factory=dict)  # document id -> wall time its upload was sent
    upload_seconds: list[float] = field(default_factory=list)
    polls: int = 0


async def sign_in(client, app: str, user: ChatUser) -> Endpoints:
    """The user's endpoints over its own client: session cookie, then the chat page for the CSRF token."""
    endpoints = Endpoints(client, app=app, llm="", token=user.token, model="rag")
    if user.kind == "page":
        client.cookies.set("sessionid", user.session, domain="127.0.0.1")  # sent to http://127.0.0.1:<port>
        page = await client.get(f"{app}/chat/{user.conversations[-1]}/")
        match = re.search(r'id="ask-form".*?name="csrfmiddlewaretoken" value="([^"]+)"', page.text, re.S)
        if page.status_code != 200 or not match:
            sys.exit(f"{user.username} could not open the chat page: HTTP {page.status_code}")
        endpoints.csrf = match.group(1)
    return endpoints


async def chat(user: ChatUser, endpoints: Endpoints, questions: list[str], think: float, deadline: float,
               results: Results, rng: random.Random) -> None:
    while time.perf_counter() < deadline:
        question = rng.choice(questions)
        try:
            if user.kind == "page":
                first, total = await endpoints.browser(question, user.conversations.pop())
            else:
                first, total = await endpoints.api(question)
        except Exception as error:  # every failure counts; the first kinds are shown
            results.errors[user.kind].append(f"{type(error).__name__}: {error}"[:300])
        else:
            results.ttft[user.kind].append(first)
            results.total[user.kind].append(total)
        await asyncio.sleep(think * rng.uniform(0.5, 1.5))


async def upload_all(client, app: str, token: str, paths: list[Path], window: float, concurrency: int,
                     results: Results) -> None:
    """Each file at its turn, evenly over ``window`` seconds, at most ``concurrency`` at once."""
    started = time.perf_counter()
    gate = asyncio.Semaphore(concurrency)

    async def upload(number: int, path: Path) -> None:
        await asyncio.sleep(max(0.0, started + number * window / len(paths) - time.perf_counter()))
        async with gate:
            sent, clock = time.time(), time.perf_counter()
            try:
                response = await client.post(
                    f"{app}/api/v1/documents", headers={"Authorization": f"Bearer {token}"},
                    files={"file": (path.name, path.read_bytes(), CONTENT_TYPES[path.suffix[1:]])},
                    data={"collection": INGEST_COLLECTION},
                )
            except Exception as error:
                results.errors["upload"].append(f"{path.name}: {type(error).__name__}: {error}"[:300])
                return
            if response.status_code != 202:
                results.errors["upload"].append(f"{path.name}: HTTP {response.status_code} {response.text[:200]}")
                return
            results.upload_seconds.append(time.perf_counter() - clock)
            results.sent[response.json()["id"]] = sent

    await asyncio.gather(*(upload(number, path) for number, path in enumerate(paths)))


async def follow(client, app: str, token: str, results: Results, uploads_done: asyncio.Event,
                 timeout: float) -> None:
    """GET /api/v1/documents once a second until every upload is finished (as a client following them)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        await asyncio.sleep(1)
        try:
            response = await client.get(f"{app}/api/v1/documents", headers={"Authorization": f"Bearer {token}"})
            response.raise_for_status()
            documents = response.json()
        except Exception as error:
            results.errors["poll"].append(f"{type(error).__name__}: {error}"[:300])
            continue
        results.polls += 1
        finished = sum(d["status"] in ("ready", "failed", "cancelled") for d in documents)
        if uploads_done.is_set() and finished >= len(results.sent):
            return
    results.errors["poll"].append(f"documents still unfinished after {timeout:.0f} s")


async def run(args, users: list[ChatUser], upload_token: str, questions: list[str], paths: list[Path],
              app: str, processes: Processes, database_url: str) -> dict:
    import httpx

    results = Results()
    rng = random.Random(7)
    # One client per user, as each browser has its own connections; plain HTTP, no TLS context.
    clients = [httpx.AsyncClient(timeout=httpx.Timeout(120), verify=False, trust_env=False) for _ in users]
    uploads = httpx.AsyncClient(timeout=httpx.Timeout(120), verify=False, trust_env=False)
    try:
        endpoints = [await sign_in(client, app, user) for client, user in zip(clients, users, strict=True)]
        print(f"{len(users)} users chatting for {args.duration:.0f} s while {len(paths)} documents are uploaded "
              f"over {args.duration * args.upload_window:.0f} s ...", flush=True)
        cpu = processes.tree_cpu()
        with ConnectionWatch(database_url, DATABASE) as watch:
            started = time.perf_counter()
            deadline = started + args.duration
            uploads_done = asyncio.Event()

            async def uploader() -> None:
                await upload_all(uploads, app, upload_token, paths, args.duration * args.upload_window,
                                 args.upload_concurrency, results)
                uploads_done.set()

            async def user_task(number: int) -> None:
                await asyncio.sleep(number * 5 / len(users))  # a 5 s ramp: people do not all press Enter at once
                await chat(users[number], endpoints[number], questions, args.think, deadline, results,
                           random.Random(rng.random()))

            following = asyncio.create_task(follow(uploads, app, upload_token, results, uploads_done,
                                                   args.duration + args.ingest_timeout))
            await asyncio.gather(uploader(), *(user_task(n) for n in range(len(users))))
            chat_elapsed = time.perf_counter() - started
            chat_cpu = processes.tree_cpu()
            await following
            ingest_elapsed = time.perf_counter() - started
        return {"results": results, "chat_elapsed": chat_elapsed, "ingest_elapsed": ingest_elapsed,
                "peak_connections": watch.peak,
                "cpu": {name: (chat_cpu[name] - cpu.get(name, 0.0)) / chat_elapsed for name in chat_cpu}}
    finally:
        for client in [*clients, uploads]:
            await client.aclose()


def ingest_figures(results: Results) -> dict:
    """Upload → ready from the worker's finished_at; every document that did not end ready is an error."""
    from documents.models import Document

    documents = Document.objects.filter(pk__in=list(results.sent)).only("pk", "status", "error", "finished_at")
    ready, not_ready = [], []
    for document in documents:
        if document.status == Document.Status.READY and document.finished_at:
            ready.append(document.finished_at.timestamp() - results.sent[document.pk])
        else:
            not_ready.append(f"document {document.pk}: {document.status} {document.error}"[:300])
    return {"ready": ready, "not_ready": not_ready}


# ---- the report -------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 users, 5 s, 5 documents (not recorded; CI)")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=float, default=120, help="seconds of chatting")
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--think", type=float, default=2.0, help="seconds a user pauses between answers (±50%%)")
    parser.add_argument("--tokens", type=int, default=20, help="tokens per answer")
    parser.add_argument("--token-delay", type=float, default=0.075, help="seconds between them (after the first)")
    parser.add_argument("--upload-window", type=float, default=0.75, help="uploads spread over this share of the chat")
    parser.add_argument("--upload-concurrency", type=int, default=4)
    parser.add_argument("--ingest-timeout", type=float, default=600, help="seconds to wait for ingestion after")
    parser.add_argument("--record", action=argparse.BooleanOptionalAction, default=None,
                        help="append the table to BENCHMARKS.md (default: unless --quick)")
    parser.add_argument("--label", default="", help="a note for the table's title")
    args = parser.parse_args()
    if args.quick:
        args.users, args.duration, args.documents = 4, 5, 5
    record = (not args.quick) if args.record is None else args.record

    load = os.getloadavg()[0]
    llm_port, app_port = free_port(), free_port()
    model_url = f"http://127.0.0.1:{llm_port}/v1"
    folder = Path(tempfile.mkdtemp(prefix="load-"))
    # Inherited by the web server and the worker (setup_django puts these in os.environ).
    _common.setup_django(
        DATABASE, EMBEDDING_BACKEND="hashing", LOG_LEVEL="WARNING", LLM_BACKEND="openai",
        OPENAI_BASE_URL=model_url, OPENAI_API_KEY="k", REDIS_URL=REDIS_URL, MEDIA_ROOT=str(folder / "media"),
        RATE_LIMIT_CHAT="", RATE_LIMIT_UPLOAD="", DEBUG="false", SECRET_KEY=secrets.token_urlsafe(32),
        SESSION_COOKIE_SECURE="false", CSRF_COOKIE_SECURE="false",
    )
    from django.db import connection

    from ragsite.celery import app as celery_app

    _common.ensure_redis(REDIS_URL)  # set BENCH_REDIS_URL for another server
    queue = celery_app.conf.task_default_queue  # the app's and the worker's, alone on this Redis database
    broker = celery_app.connection().default_channel.client  # type: ignore[attr-defined]  # kombu's Redis channel
    broker.delete(queue)  # tasks an interrupted run left behind
    users, upload_token, questions, corpus = prepare(args)
    print(f"  {corpus}, {len(questions)} questions; generating {args.documents} uploads ...", flush=True)
    (folder / "uploads").mkdir()
    paths = make_uploads(folder / "uploads", args.documents)
    database_url = os.environ["DATABASE_URL"]
    connection.close()

    processes = Processes(folder, llm_port, app_port, f"loadbench-{os.getpid()}@%h")
    app, llm = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{llm_port}"
    try:
        wait_for(f"{llm}/stats", processes.llm, folder / "llm.log")
        wait_for(f"{app}/accounts/login/", processes.app, folder / "app.log")
        processes.wait_worker()
        import httpx

        httpx.post(f"{llm}/control", json={"tokens": args.tokens, "delay": args.token_delay})
        outcome = asyncio.run(run(args, users, upload_token, questions, paths, app, processes, database_url))
    finally:
        processes.stop()
        broker.delete(queue)
        for generated in ("media", "uploads"):
            shutil.rmtree(folder / generated, ignore_errors=True)
    print(f"logs: {folder}", flush=True)

    results: Results = outcome["results"]
    ingest = ingest_figures(results)
    errors = {kind: len(found) for kind, found in results.errors.items()}
    errors["documents"] = len(ingest["not_ready"])
    for kind, found in [*results.errors.items(), ("documents", ingest["not_ready"])]:
        for error in sorted(set(found))[:5]:
            print(f"  {kind}: {found.count(error)} × {error}", flush=True)
    elapsed = outcome["chat_elapsed"]
    labels = {"page": "POST /chat/<id>/ask/ (page, SSE)", "api": "POST /v1/chat/completions (stream)"}
    rows: list[list[Any]] = [["endpoint", "users", "answers", "answers/s", "errors", "TTFT p50 ms", "TTFT p95 ms",
             "answer p50 ms", "answer p95 ms"]]
    every_ttft, every_total = [], []
    for kind in ("page", "api"):
        ttft, total = results.ttft[kind], results.total[kind]
        every_ttft += ttft
        every_total += total
        rows.append([labels[kind], sum(u.kind == kind for u in users), len(ttft), f"{len(ttft) / elapsed:.1f}",
                     errors[kind], ms(percentile(ttft, 50)), ms(percentile(ttft, 95)), ms(percentile(total, 50)),
                     ms(percentile(total, 95))])
    rows.append(["both", len(users), len(every_ttft), f"{len(every_ttft) / elapsed:.1f}",
                 errors["page"] + errors["api"], ms(percentile(every_ttft, 50)), ms(percentile(every_ttft, 95)),
                 ms(percentile(every_total, 50)), ms(percentile(every_total, 95))])
    ready = ingest["ready"]
    ingest_rows: list[list[Any]] = [
                   ["documents uploaded", "ready", "not ready", "upload errors", "upload (→ 202) p50 / p95 ms",
                    "upload → ready p50 s", "upload → ready p95 s", "upload → ready max s", "status polls (errors)"],
                   [len(results.sent), len(ready), len(ingest["not_ready"]), errors["upload"],
                    f"{ms(percentile(results.upload_seconds, 50))} / {ms(percentile(results.upload_seconds, 95))}",
                    f"{percentile(ready, 50):.2f}", f"{percentile(ready, 95):.2f}", f"{max(ready, default=0):.2f}",
                    f"{results.polls} ({errors['poll']})"]]
    cpu = " / ".join(f"{outcome['cpu'].get(name, 0):.2f}" for name in ("app", "worker", "model", "client"))
    print("\n".join(" | ".join(str(cell) for cell in row) for row in rows + ingest_rows))
    print(f"CPU (cores) app / worker / model / client: {cpu}; peak PostgreSQL sessions {outcome['peak_connections']}")
    total_errors = sum(errors.values())

    if record:
        label = f", {args.label}" if args.label else ""
        _common.record(
            f"Load: {len(users)} users chatting for {args.duration:.0f} s while {args.documents} documents ingest "
            f"(bench/load.py{label})",
            f"uvicorn ragsite.asgi:application (one process), DATABASE_POOL=true (max "
            f"{os.environ.get('DATABASE_POOL_MAX_SIZE', '20')}), `celery -A ragsite "
            f"worker --concurrency 2` (EMBEDDING_THREADS={max(1, (os.cpu_count() or 1) // 2)}), as `make run` "
            f"starts them; DEBUG=false, rate limits off; LLM_BACKEND=openai against bench/chat_stream.py's loopback "
            f"model server ({args.tokens} tokens, {args.token_delay * 1000:.0f} ms apart); EMBEDDING_BACKEND=hashing; "
            f"chat collection: {corpus}. {len(users)} users (half on the page, half on the API), each pausing "
            f"{args.think:g} s ±50% between answers, every question in a new conversation, 5 s ramp. Uploads: "
            f"PDF, Word, HTML, Markdown and text in turn (~6 abstracts each), evenly over the first "
            f"{args.duration * args.upload_window:.0f} s, {args.upload_concurrency} at a time, progress polled "
            f"once a second. Load average when the run started: {load:.1f} (the 2 cores are shared).",
            rows,
            "TTFT: from sending the question to the first answer token; answer: to the end of the stream. "
            "Errors: HTTP errors, error events, cut-off streams and client timeouts (120 s); goal 0.\n\n"
            + "\n".join("| " + " | ".join(str(cell) for cell in row) + " |"
                        for row in [ingest_rows[0], ["---"] * len(ingest_rows[0]), *ingest_rows[1:]])
            + f"\n\nUpload → ready: from sending the upload to the worker's `finished_at`; the last document was "
            f"ready {outcome['ingest_elapsed']:.0f} s after the start. CPU (cores, during the chat) app / worker / "
            f"model / client: {cpu}; peak PostgreSQL sessions on the bench database: {outcome['peak_connections']}. "
            f"Errors in all: {total_errors}.",
        )
    print(f"errors={total_errors} answers={len(every_ttft)} ttft_p50_ms={percentile(every_ttft, 50) * 1000:.1f} "
          f"ttft_p95_ms={percentile(every_ttft, 95) * 1000:.1f} answer_p50_ms={percentile(every_total, 50) * 1000:.1f} "
          f"answer_p95_ms={percentile(every_total, 95) * 1000:.1f} upload_ready_p50_s={percentile(ready, 50):.2f} "
          f"upload_ready_p95_s={percentile(ready, 95):.2f} documents_ready={len(ready)}/{args.documents}")


if __name__ == "__main__":
    main()
