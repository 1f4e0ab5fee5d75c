"""Chat streaming: time to first token through the app vs. straight to the model, then 100 concurrent chats.

    python bench/chat_stream.py [--quick] [--rounds N] [--concurrency N] [--duration S]

Serves the app as ``make run`` does (``uvicorn ragsite.asgi:application``, ``DATABASE_POOL=true``) on its
own database (``ragbench_chat``), with ``LLM_BACKEND=openai`` pointed at a loopback OpenAI-protocol server
that runs in its own process (a bare ASGI app under uvicorn, started by this script with ``--serve-llm``)
and answers at once. Query embeddings use the ``hashing`` backend, so the overhead measured is the app's
(HTTP, session or token, database writes, embedding, hybrid retrieval, prompt building, the model call and
re-streaming), not a model's. The collection is 300 SciFact abstracts (``$RAG_SHARED_DIR``), or 300
generated policy documents when that folder is missing; the questions are ones retrieval finds passages
for, so every answer goes through the model.

1. TTFT, one request at a time, interleaved rounds: the model server called directly (raw httpx stream),
   ``POST /v1/chat/completions`` (stream=true, API token) and the chat page's ``POST /chat/<id>/ask/``
   (signed-in session, the form's CSRF token, multipart like the page's ``FormData``), each question in a
   new conversation. Overhead = the app's TTFT percentile minus the direct one.
2. ``--concurrency`` simultaneous streaming chats for ``--duration`` seconds on each endpoint (asyncio +
   httpx), the model now streaming ``--tokens`` tokens ``--token-delay`` seconds apart after the first, as
   a real one does: errors, TTFT percentiles, answers completed, and the peak number of PostgreSQL
   connections the app held.

Appends both tables to bench/BENCHMARKS.md and ends with one line:
``overhead_p50_ms=… concurrent_errors=… ttft_p95_ms=…`` (the worse endpoint's overhead, the errors of all
concurrent runs, the worse endpoint's concurrent p95 TTFT).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

DATABASE = "ragbench_chat"
COLLECTION = "chat-bench"
SCIFACT = _common.SHARED / "data" / "scifact"
# One user (and so one collection) per corpus: a run without the shared data never mixes the two.
USERNAME = "chatbench" if (SCIFACT / "corpus.jsonl").exists() else "chatbench-generated"
DOCUMENTS = 300
REPLY = "Answer based on [1]."


# ---- the model: a bare ASGI app speaking the OpenAI streaming protocol -----------------------------------------
class _LLMState:
    tokens = 4  # content tokens per answer
    delay = 0.0  # seconds between content tokens after the first
    requests = 0


def _reply_tokens(count: int) -> list[str]:
    words = re.findall(r"\s*\S+", REPLY)
    filler = [" and", " more", " words"]
    while len(words) < count:
        words.append(filler[len(words) % len(filler)])
    return words[:count]


async def _llm_app(scope, receive, send):
    """POST /v1/chat/completions (streamed or not); POST /control {"tokens", "delay"}; GET /stats."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    path = scope["path"].rstrip("/")

    async def reply(status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    if path == "/control":
        settings = json.loads(body)
        _LLMState.tokens, _LLMState.delay = int(settings["tokens"]), float(settings["delay"])
        await reply(200, {"ok": True})
        return
    if path == "/stats":
        await reply(200, {"requests": _LLMState.requests})
        return
    if path != "/v1/chat/completions":
        await reply(404, {"error": {"message": "Unknown URL", "type": "invalid_request_error"}})
        return
    _LLMState.requests += 1
    request = json.loads(body)
    tokens = _reply_tokens(_LLMState.tokens)
    ident, created, model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), request.get("model", "m")
    if not request.get("stream"):
        await reply(200, {
            "id": ident, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": "".join(tokens), "refusal": None}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": len(tokens), "total_tokens": len(tokens) + 1},
        })
        return

    def event(delta: dict, finish: str | None = None) -> dict:
        chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return {"type": "http.response.body", "body": f"data: {json.dumps(chunk)}\n\n".encode(), "more_body": True}

    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]})
    await send(event({"role": "assistant", "content": ""}))
    for index, token in enumerate(tokens):
        if index and _LLMState.delay:
            await asyncio.sleep(_LLMState.delay)
        await send(event({"content": token}))
    await send(event({}, "stop"))
    if (request.get("stream_options") or {}).get("include_usage"):  # as OpenAI, vLLM and Ollama do
        usage = {"prompt_tokens": 1, "completion_tokens": len(tokens), "total_tokens": len(tokens) + 1}
        chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [], "usage": usage}
        await send({"type": "http.response.body", "body": f"data: {json.dumps(chunk)}\n\n".encode(),
                    "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


def serve_llm(port: int) -> None:
    import uvicorn

    uvicorn.run(_llm_app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")


# ---- setup ------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{url} did not start (exit {process.returncode}); see {log}:\n{log.read_text()[-3000:]}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    sys.exit(f"{url} did not answer within {timeout:.0f} s; see {log}")


def generated_corpus(path: Path, count: int) -> None:
    """Policy-like documents for a clone without the shared data: varied, and answerable by keyword."""
    import random

    rng = random.Random(7)
    topics = ["travel", "vacation", "expenses", "security", "onboarding", "hardware", "parental leave", "training",
              "remote work", "overtime", "benefits", "procurement", "privacy", "incident response", "hiring"]
    verbs = ["must be approved by", "is reviewed every quarter by", "is reimbursed after a request to",
             "is limited to what is agreed with", "needs a written note to", "is documented and sent to"]
    roles = ["a manager", "the finance team", "human resources", "the security officer", "the team lead",
             "the works council", "the data protection officer"]
    with path.open("w") as handle:
        for number in range(count):
            topic = topics[number % len(topics)]
            sentences = [
                f"The {topic} policy, revision {number}, applies to every employee of site {number % 23}.",
                *(f"{topic.capitalize()} {rng.choice(['requests', 'reports', 'budgets', 'exceptions'])} "
                  f"{rng.choice(verbs)} {rng.choice(roles)} within {rng.randint(2, 30)} days." for _ in range(12)),
            ]
            handle.write(json.dumps({"_id": f"policy-{number}", "title": f"{topic.capitalize()} policy {number}",
                                     "text": " ".join(sentences)}) + "\n")


def prepare_corpus(user, documents: int = DOCUMENTS) -> tuple[list[str], str]:
    """Import the collection once (reused by later runs); the questions retrieval finds passages for."""
    import io

    from django.core.management import call_command

    from documents import search as retrieval
    from documents.models import Document

    with tempfile.TemporaryDirectory() as folder:
        if (SCIFACT / "corpus.jsonl").exists():
            corpus, source = SCIFACT / "corpus.jsonl", f"{documents} SciFact abstracts"
            claims = [json.loads(line)["text"] for line in (SCIFACT / "queries-dev.jsonl").open()]
        else:
            corpus, source = Path(folder) / "generated.jsonl", f"{documents} generated policy documents"
            generated_corpus(corpus, documents)
            claims = [f"Who approves {topic} requests?" for topic in
                      ("travel", "vacation", "expenses", "security", "onboarding", "hardware", "training", "overtime")]
        call_command("import_beir", str(corpus), collection=COLLECTION, owner=user.username, limit=documents,
                     mode="inline", stdout=io.StringIO())
    ready = Document.objects.filter(collection__name=COLLECTION, collection__owner=user,
                                    status=Document.Status.READY).count()
    questions = []
    for claim in claims:
        if any(hit.relevant for hit in retrieval.search(user=user, query=claim, k=6)):
            questions.append(claim)
        if len(questions) == 50:
            break
    if not questions:
        sys.exit("retrieval finds nothing for the questions: the corpus import failed?")
    return questions, f"{source} ({ready} ready)"


def new_conversations(user, count: int) -> list[int]:
    from chat.models import Conversation

    return [c.pk for c in Conversation.objects.bulk_create(Conversation(owner=user) for _ in range(count))]


# ---- clients ----------------------------------------------------------------------------------------------------
class Failure(Exception):
    pass


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    """A body like the page's ``new FormData(form)``."""
    boundary = f"----ragbench{uuid.uuid4().hex}"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
             for name, value in fields.items()]
    return ("".join(parts) + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}"


class Endpoints:
    """The three ways to get an answer; each returns (seconds to the first token, seconds to the end)."""

    def __init__(self, client, *, app: str, llm: str, token: str, model: str):
        self.client, self.app, self.llm, self.token, self.model = client, app, llm, token, model
        self.csrf = ""

    def clone(self, client) -> Endpoints:
        """The same endpoints, signed in, over another client (its own connections, as each browser has)."""
        twin = Endpoints(client, app=self.app, llm=self.llm, token=self.token, model=self.model)
        twin.csrf = self.csrf
        client.cookies = self.client.cookies
        return twin

    async def sign_in(self, username: str, password: str, conversation: int) -> None:
        page = await self.client.get(f"{self.app}/accounts/login/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        signed = await self.client.post(
            f"{self.app}/accounts/login/", data={"username": username, "password": password,
                                                 "csrfmiddlewaretoken": csrf},
            headers={"Referer": f"{self.app}/accounts/login/"},
        )
        if signed.status_code != 302:
            sys.exit(f"signing in failed: HTTP {signed.status_code}")
        page = await self.client.get(f"{self.app}/chat/{conversation}/")
        self.csrf = re.search(r'id="ask-form".*?name="csrfmiddlewaretoken" value="([^"]+)"', page.text, re.S).group(1)

    async def _openai_stream(self, url: str, headers: dict, question: str) -> tuple[float, float]:
        body = {"model": self.model, "stream": True, "messages": [{"role": "user", "content": question}]}
        started = time.perf_counter()
        first = None
        done = False
        async with self.client.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code != 200:
                raise Failure(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    continue
                data = json.loads(line[6:])
                if "error" in data:
                    raise Failure(f"error event: {data['error']}")
                if first is None and data["choices"] and data["choices"][0]["delta"].get("content"):
                    first = time.perf_counter()
        if first is None or not done:
            raise Failure("the stream ended without an answer")
        return first - started, time.perf_counter() - started

    async def direct(self, question: str, conversation: int | None = None) -> tuple[float, float]:
        return await self._openai_stream(f"{self.llm}/v1/chat/completions", {"Authorization": "Bearer k"}, question)

    async def api(self, question: str, conversation: int | None = None) -> tuple[float, float]:
        return await self._openai_stream(
            f"{self.app}/v1/chat/completions", {"Authorization": f"Bearer {self.token}"}, question
        )

    async def browser(self, question: str, conversation: int) -> tuple[float, float]:
        body, content_type = multipart({"csrfmiddlewaretoken": self.csrf, "question": question,
                                        "document": "", "after": ""})
        headers = {"Content-Type": content_type, "Accept": "text/event-stream", "Origin": self.app,
                   "Referer": f"{self.app}/chat/{conversation}/"}
        started = time.perf_counter()
        first = None
        done = False
        async with self.client.stream("POST", f"{self.app}/chat/{conversation}/ask/", content=body,
                                      headers=headers) as response:
            if response.status_code != 200:
                raise Failure(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                    if event == "token" and first is None:
                        first = time.perf_counter()
                elif line.startswith("data: ") and event in ("done", "error"):
                    data = json.loads(line[6:])
                    if data.get("error"):
                        raise Failure(f"{event} event: {data['error']}")
                    done = event == "done"
        if first is None or not done:
            raise Failure("the stream ended without an answer")
        return first - started, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


class ConnectionWatch:
    """The peak number of PostgreSQL sessions on the bench database, sampled from another thread."""

    def __init__(self, url: str, database: str):
        self.url, self.database, self.peak = url, database, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            while not self._stop.wait(0.2):
                count = connection.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    [self.database],
                ).fetchone()[0]
                self.peak = max(self.peak, count)

    def __enter__(self) -> ConnectionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ---- the measurements -------------------------------------------------------------------------------------------
def stage_times(user, questions: list[str], count: int) -> dict[str, list[float]]:
    """Where the app's time to first token goes, step by step, in this process (no HTTP, one at a time)."""
    from django.conf import settings

    from chat import llm, prompting
    from documents import embeddings
    from documents import search as retrieval

    model, backend = llm.get_llm(), embeddings.get_backend()
    candidates = settings.RETRIEVAL_CANDIDATES
    stages: dict[str, list[float]] = {"embed the question": [], "hybrid retrieval (incl. embedding)": [],
                                      "fit passages + build the prompt": [], "model call to first token": [],
                                      "(of the retrieval: vector arm alone)": [],
                                      "(of the retrieval: keyword arm alone)": []}
    for number in range(count + 5):
        question = questions[number % len(questions)]
        started = time.perf_counter()
        backend.embed_query(question)
        embedded = time.perf_counter()
        hits = [hit for hit in retrieval.search(user=user, query=question, k=6) if hit.relevant]
        searched = time.perf_counter()
        hits = prompting.fit_hits(hits, prompting.passages_budget())
        messages = prompting.build_messages(question=question, history=[], hits=hits)
        prompted = time.perf_counter()
        tokens = model.stream(messages, hits=hits)
        next(tokens)
        first = time.perf_counter()
        for _ in tokens:
            pass
        vector = backend.embed_query(question)
        arms = time.perf_counter()
        # Each arm as hybrid search runs it: RETRIEVAL_CANDIDATES rows.
        retrieval.search(user=user, query=question, k=candidates, mode="vector", query_vector=vector)
        vector_arm = time.perf_counter()
        retrieval.search(user=user, query=question, k=candidates, mode="keyword")
        keyword_arm = time.perf_counter()
        if number >= 5:
            for name, seconds in zip(stages, (embedded - started, searched - embedded, prompted - searched,
                                              first - prompted, vector_arm - arms, keyword_arm - vector_arm),
                                     strict=True):
                stages[name].append(seconds)
    return stages


async def measure_ttft(endpoints: Endpoints, questions: list[str], conversations: list[int], rounds: int,
                       warmup: int) -> dict[str, list[float]]:
    paths = {"direct": endpoints.direct, "api": endpoints.api, "browser": endpoints.browser}
    ttft: dict[str, list[float]] = {name: [] for name in paths}
    for round_ in range(warmup + rounds):
        question = questions[round_ % len(questions)]
        for name, call in paths.items():
            first, _ = await call(question, conversations.pop() if name == "browser" else None)
            if round_ >= warmup:
                ttft[name].append(first)
    return ttft


async def run_concurrent(endpoints: Endpoints, kind: str, questions: list[str], conversations: list[int],
                         concurrency: int, duration: float) -> dict:
    import httpx

    ttfts: list[float] = []
    totals: list[float] = []
    errors: list[str] = []
    counter = iter(range(10**9))

    # One client per user, as each browser has its own connections (and httpx's pool gets slow with a
    # hundred connections in one client: it scans them all for every request). Plain HTTP: no TLS context.
    clients = [httpx.AsyncClient(timeout=httpx.Timeout(120), verify=False, trust_env=False)
               for _ in range(concurrency)]

    async def user(number: int) -> None:
        async with clients[number] as client:
            call = getattr(endpoints.clone(client), kind)
            await asyncio.sleep(number * 0.01)  # a 1 s ramp, as people do not all press Enter at once
            while time.perf_counter() < deadline:
                question = questions[next(counter) % len(questions)]
                try:
                    first, total = await call(question, conversations.pop() if kind == "browser" else None)
                except Exception as error:  # every failure is counted, and the first kinds shown
                    errors.append(f"{type(error).__name__}: {error}"[:300])
                    await asyncio.sleep(0.1)
                    continue
                ttfts.append(first)
                totals.append(total)

    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(*(user(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"ttft": ttfts, "total": totals, "errors": errors, "elapsed": elapsed}


async def main_async(args, setup) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=httpx.Timeout(120)) as client:
        endpoints = Endpoints(client, app=setup["app"], llm=setup["llm"], token=setup["token"], model="rag")
        await endpoints.sign_in(USERNAME, setup["password"], setup["conversations"][-1])
        await client.post(f"{setup['llm']}/control", json={"tokens": 4, "delay": 0})
        print(f"TTFT: {args.rounds} rounds of direct / API / chat page, one request at a time ...", flush=True)
        setup["ttft"] = await measure_ttft(endpoints, setup["questions"], setup["conversations"], args.rounds,
                                           args.warmup)
        for name, values in setup["ttft"].items():
            print(f"  {name:8} p50 {ms(percentile(values, 50))} ms  p95 {ms(percentile(values, 95))} ms", flush=True)
        await client.post(f"{setup['llm']}/control", json={"tokens": args.tokens, "delay": args.token_delay})
        setup["concurrent"] = {}
        runs = [("direct", args.direct_duration), ("browser", args.duration), ("api", args.duration)]
        for kind, duration in runs:
            print(f"{args.concurrency} concurrent streaming chats on {kind} for {duration:.0f} s ...", flush=True)
            cpu = {name: sum(process.cpu_times()[:2]) for name, process in setup["processes"].items()}
            with ConnectionWatch(setup["admin_url"], setup["database"]) as watch:
                result = await run_concurrent(endpoints, kind, setup["questions"], setup["conversations"],
                                              args.concurrency, duration)
            result["peak_connections"] = watch.peak
            result["cpu"] = {name: (sum(process.cpu_times()[:2]) - cpu[name]) / result["elapsed"]
                             for name, process in setup["processes"].items()}
            setup["concurrent"][kind] = result
            print(f"  completed {len(result['ttft'])}  errors {len(result['errors'])}  "
                  f"TTFT p50 {ms(percentile(result['ttft'], 50))} ms p95 {ms(percentile(result['ttft'], 95))} ms  "
                  f"peak PostgreSQL sessions {watch.peak}  CPU (cores): "
                  + " ".join(f"{name} {value:.2f}" for name, value in result["cpu"].items()), flush=True)
            for error in sorted(set(result["errors"]))[:5]:
                print(f"    {result['errors'].count(error)} × {error}", flush=True)
            await asyncio.sleep(2)  # let the server finish what the clients gave up on
        await client.post(f"{setup['llm']}/control", json={"tokens": 4, "delay": 0})  # for stage_times()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 rounds, 10 clients for 3 s: not recorded (CI)")
    parser.add_argument("--rounds", type=int, default=300, help="measured TTFT rounds (each: direct, API, page)")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured TTFT rounds first")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--duration", type=float, default=60, help="seconds of concurrent chats per endpoint")
    parser.add_argument("--direct-duration", type=float, default=15,
                        help="seconds of concurrent streams straight to the model server (its own ceiling)")
    parser.add_argument("--tokens", type=int, default=20, help="tokens per answer in the concurrent runs")
    parser.add_argument("--token-delay", type=float, default=0.075, help="seconds between them (after the first)")
    parser.add_argument("--record", action=argparse.BooleanOptionalAction, default=None,
                        help="append the tables to BENCHMARKS.md (default: unless --quick)")
    parser.add_argument("--label", default="", help="a note for the table titles, e.g. 'before the fix'")
    parser.add_argument("--serve-llm", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_llm:
        serve_llm(args.serve_llm)
        return
    if args.quick:
        args.rounds, args.warmup, args.duration, args.direct_duration = 10, 2, 3, 2
        args.concurrency = min(args.concurrency, 10)
    # --quick: 50 abstracts in a database of its own (a full run reuses its 300).
    database, documents = (f"{DATABASE}_quick", 50) if args.quick else (DATABASE, DOCUMENTS)
    record = (not args.quick) if args.record is None else args.record

    load = os.getloadavg()[0]
    llm_port, app_port = free_port(), free_port()
    model_url = f"http://127.0.0.1:{llm_port}/v1"
    # Production settings, as bench/search.py serves the app (DEBUG=false); plain HTTP on loopback, so the
    # session and CSRF cookies may not be Secure-only. The chat rate limit is checked (as in production) but
    # set out of reach: one user asks thousands of questions here. The app's process inherits this environment.
    _common.setup_django(database, EMBEDDING_BACKEND="hashing", LOG_LEVEL="WARNING", LLM_BACKEND="openai",
                         OPENAI_BASE_URL=model_url, OPENAI_API_KEY="k", DEBUG="false",
                         SECRET_KEY=secrets.token_urlsafe(32), SESSION_COOKIE_SECURE="false",
                         CSRF_COOKIE_SECURE="false", RATE_LIMIT_CHAT="100000000/m")
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection

    from core.models import ApiToken

    user, _ = get_user_model().objects.get_or_create(username=USERNAME)
    password = secrets.token_urlsafe(16)
    user.set_password(password)
    user.save()
    print("preparing the collection (first run: imports it) ...", flush=True)
    started = time.perf_counter()
    questions, corpus = prepare_corpus(user, documents)
    print(f"  {corpus}, {len(questions)} questions ({time.perf_counter() - started:.0f} s)", flush=True)
    with connection.cursor() as cursor:  # the bench database is ours: start each run without old chats
        cursor.execute("TRUNCATE chat_citation, chat_message, chat_conversation")
        cursor.execute("SHOW max_connections")
        max_connections = cursor.fetchone()[0]
    needed = args.warmup + args.rounds + 200 * int(args.duration) + 1000  # a ceiling of 200 answers/s
    conversations = new_conversations(user, needed)
    _, token = ApiToken.issue(user=user, name="chat_stream bench")
    database_url = os.environ["DATABASE_URL"]
    connection.close()

    logs = Path(tempfile.mkdtemp(prefix="chat_stream-"))
    llm_log, app_log = logs / "llm.log", logs / "app.log"
    llm = subprocess.Popen([sys.executable, __file__, "--serve-llm", str(llm_port)],
                           stdout=llm_log.open("w"), stderr=subprocess.STDOUT)
    app_env = {
        **os.environ, "DATABASE_URL": database_url, "DATABASE_POOL": "true", "LLM_BACKEND": "openai",
        "OPENAI_BASE_URL": model_url, "OPENAI_API_KEY": "k",
        "EMBEDDING_BACKEND": "hashing", "LOG_LEVEL": "WARNING",
    }
    app = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "ragsite.asgi:application", "--host", "127.0.0.1", "--port",
         str(app_port), "--timeout-graceful-shutdown", "5"],
        cwd=_common.ROOT, env=app_env, stdout=app_log.open("w"), stderr=subprocess.STDOUT,
    )
    import psutil

    setup = {
        "processes": {"app": psutil.Process(app.pid), "model": psutil.Process(llm.pid), "client": psutil.Process()},
        "app": f"http://127.0.0.1:{app_port}", "llm": f"http://127.0.0.1:{llm_port}", "token": token,
        "password": password, "questions": questions, "conversations": conversations,
        "admin_url": database_url, "database": database,
    }
    try:
        wait_for(f"{setup['llm']}/stats", llm, llm_log)
        wait_for(f"{setup['app']}/accounts/login/", app, app_log)
        print(f"app: pid {app.pid}, {setup['app']}; model server: pid {llm.pid}", flush=True)
        asyncio.run(main_async(args, setup))
        print("where the time goes, in-process ...", flush=True)
        stages = stage_times(user, questions, args.rounds)
    finally:
        for process in (app, llm):
            process.terminate()
        for process in (app, llm):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
    print(f"server logs: {logs}", flush=True)  # the app's log shows any failure's traceback

    ttft = setup["ttft"]
    direct = ttft["direct"]
    overhead = {}
    rows = [["path", "TTFT p50 ms", "TTFT p95 ms", "overhead p50 ms", "overhead p95 ms", "requests"]]
    for name, label in (("direct", "model server, directly"), ("api", "POST /v1/chat/completions (stream)"),
                        ("browser", "POST /chat/<id>/ask/ (page, SSE)")):
        values = ttft[name]
        p50, p95 = percentile(values, 50), percentile(values, 95)
        if name == "direct":
            rows.append([label, ms(p50), ms(p95), "", "", len(values)])
            continue
        overhead[name] = (p50 - percentile(direct, 50), p95 - percentile(direct, 95))
        rows.append([label, ms(p50), ms(p95), ms(overhead[name][0]), ms(overhead[name][1]), len(values)])
    concurrent_rows = [["endpoint", "clients", "seconds", "answers completed", "answers/s", "errors",
                        "TTFT p50 ms", "TTFT p95 ms", "TTFT max ms", "answer p95 ms", "peak PG sessions",
                        "CPU app / model / client"]]
    for kind, label in (("direct", "model server, directly"), ("browser", "POST /chat/<id>/ask/"),
                        ("api", "POST /v1/chat/completions")):
        result = setup["concurrent"][kind]
        concurrent_rows.append([
            label, args.concurrency, f"{result['elapsed']:.0f}", len(result["ttft"]),
            f"{len(result['ttft']) / result['elapsed']:.1f}", len(result["errors"]),
            ms(percentile(result["ttft"], 50)), ms(percentile(result["ttft"], 95)),
            ms(max(result["ttft"], default=float("nan"))), ms(percentile(result["total"], 95)),
            result["peak_connections"] if kind != "direct" else "",
            " / ".join(f"{result['cpu'][name]:.2f}" for name in ("app", "model", "client")),
        ])
    stage_rows = [["step (in-process, one at a time)", "p50 ms", "p95 ms"]]
    for name, values in stages.items():
        stage_rows.append([name, ms(percentile(values, 50)), ms(percentile(values, 95))])
    print("\n".join(" | ".join(str(cell) for cell in row) for row in rows + stage_rows + concurrent_rows))

    worst_overhead = max(value[0] for value in overhead.values())
    errors = sum(len(setup["concurrent"][kind]["errors"]) for kind in ("browser", "api"))
    worst_p95 = max(percentile(setup["concurrent"][kind]["ttft"], 95) for kind in ("browser", "api"))
    label = f", {args.label}" if args.label else ""
    if record:
        common = (
            f"uvicorn ragsite.asgi:application (one process, as `make run`), DATABASE_POOL=true (max "
            f"{settings.DATABASES['default']['OPTIONS'].get('pool', {}).get('max_size', 20)}"
            f" — DATABASE_POOL_MAX_SIZE), PostgreSQL max_connections={max_connections}, DEBUG={settings.DEBUG}; "
            f"LLM_BACKEND=openai against a loopback OpenAI-protocol server in its own process (a bare ASGI app "
            f"under uvicorn, bench/chat_stream.py --serve-llm); EMBEDDING_BACKEND=hashing; collection: {corpus}; "
            f"hybrid retrieval, RETRIEVAL_K={settings.RETRIEVAL_K}; every question in a new conversation. "
            f"Load average when the run started: {load:.1f} (the 2 cores are shared)."
        )
        _common.record(
            f"Chat streaming: time to first token, app vs. model server (bench/chat_stream.py{label})",
            common + f" {args.rounds} interleaved rounds (after {args.warmup} warm-up), one request at a time; "
            "the model answers at once (4 tokens).",
            rows,
            "TTFT: from sending the request to the first answer token (httpx, streaming). Overhead: the app's "
            "percentile minus the direct one. It includes what the app does before the model's first token: "
            "session or API token, saving the question (page), embedding the question (hashing backend, so no "
            "model time), hybrid retrieval in PostgreSQL, building the prompt, the call to the model and "
            "re-streaming its tokens. Goal: p50 and p95 overhead ≤ 30 ms.\n\n"
            + "\n".join("| " + " | ".join(str(cell) for cell in row) + " |"
                        for row in [stage_rows[0], ["---"] * 3, *stage_rows[1:]])
            + "\n\nThe steps above, timed in the bench process (same database, same model server): the rest of "
            "the overhead is HTTP, Django (middleware, session or token), the question's save (page) and thread "
            "hand-offs.",
        )
        _common.record(
            f"Chat streaming: {args.concurrency} concurrent chats (bench/chat_stream.py{label})",
            common + f" {args.concurrency} asyncio + httpx clients, each asking again as soon as its answer ends; "
            f"the model streams {args.tokens} tokens {args.token_delay * 1000:.0f} ms apart after the first "
            f"(an answer takes ~{(args.tokens - 1) * args.token_delay:.1f} s, as a real one does).",
            concurrent_rows,
            "Errors: HTTP errors, error events, cut-off streams and client timeouts (120 s); goal 0. Peak PG "
            "sessions: the most PostgreSQL sessions open on the bench database at once (sampled every 0.2 s), "
            "i.e. what the app's connection pool grew to. CPU: cores used by the app (one uvicorn process), the "
            "model server and this client, averaged over the run.",
        )
    print(f"overhead_p50_ms={worst_overhead * 1000:.1f} concurrent_errors={errors} ttft_p95_ms={worst_p95 * 1000:.1f}")


if __name__ == "__main__":
    main()
