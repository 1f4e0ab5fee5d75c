"""Hostile and broken input: files through the API and a real worker process, questions and queries.

Files go in through ``POST /api/v1/documents`` and are ingested by a real ``celery -A ragsite worker``
subprocess (prefork pool, concurrency 1, its own queue, ``PARSE_MAX_MEMORY_MB=1024``): the shared
fixtures, then generated cases — a renamed executable, DOCX zip bombs, a 6,000-page PDF, one 50 MB line,
100,000 nested ``<div>``, NUL bytes, invalid UTF-8 and names with ``../``, HTML, emoji and 300 characters.
Each ends ready, or failed with a sentence ending in "."; the worker lives (a normal document goes through
at the end); and memory stays bounded: the peak resident memory of every process of the worker (the main
process, its pool process and the forked parser children) stays under 1.5 GB.

Then odd requests (no worker needed): every place a request carries an id, walked with values that are not
ids (Unicode digits such as "²", "٣", "３", signs, NUL, past a bigint); content parts whose text is not a
string; lone surrogates in questions; bodies past Django's in-memory limit; control characters in a
collection's name. None may answer 5xx, and each gets its clear 4xx.

Memory is read two ways. Per case: the largest ``VmHWM`` (peak RSS) of any process of the worker's tree
while the case ran, read from /proc every 20 ms (peaks are reset with ``/proc/PID/clear_refs`` first); a
parser child's last 20 ms can escape it. Overall, exactly: ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` taken
by a wrapper process around the worker once it has stopped, which covers every process it ever had.

Measured on 2 shared cores (2026-11-25; largest peak RSS of one worker process while the case ran, MB —
the pool process alone holds ~120 MB):

==================================  =========================================================================  =====
case (size uploaded)                outcome                                                                    MB
==================================  =========================================================================  =====
11 shared fixtures                  good/odd ready; bad ones failed with their reasons                          169
renamed executable tool.pdf (16 KB) refused at upload (415): "This file is a program … Supported formats: …"   –
DOCX zip bomb (1.0 MB → 1,000 MB)   failed: "… expands to 1,000 MB of content; that is too large …" (not inflated)119
DOCX bomb whose sizes lie (3.3 MB   failed: "Reading the file needed more memory than allowed                   921
→ 1.05 GB, declares 4 KB)           (PARSE_MAX_MEMORY_MB)."
DOCX of 400 MiB of paragraphs,      failed: the same (under the 512 MB size guard, so the XML parser ran       1120
1.3 MB zipped                       into the parser child's 1024 MB limit)
6,000-page PDF (2.5 MB)             failed: "The PDF has 6,000 pages; the limit is 5,000 (PARSE_MAX_PAGES)."    129
one 50 MB line (52,427,776 bytes)   failed: "… 52,427,776 characters …; the limit is 10,000,000 …"              195
100,000 nested <div> (1.1 MB)       ready, the text inside kept                                                 162
NUL bytes at the start / inside     refused at upload (415) / ready, NULs dropped                               141
invalid UTF-8                       ready                                                                       143
7 hostile file names                ready; names cleaned, stored under their checksum, escaped on the page      144
whole run, exact (getrusage)                                                                                   1120
==================================  =========================================================================  =====

The two bombs that get past the size guard are stopped by the parser child's memory limit, so their peak
is what PARSE_MAX_MEMORY_MB allows (at the default 2048, the 400 MiB DOCX peaks at ~2.1 GB in the child
and fails the same way). The worker's own processes stay near 120 MB; the module takes ~50 s.
"""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
import zipfile
import zlib
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode, urlunsplit

import pytest
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.urls import reverse

from chat.models import Conversation, Message
from core.models import ApiToken
from documents import pipeline, services
from documents.models import Chunk, Document
from tests import documents_factory as factory
from tests.system.test_access_control import API, PAGES

RSS_BOUND_MB = 1536
WORKER_PARSE_MAX_MEMORY_MB = 1024
FINISH_TIMEOUT = 240
FIGURES: dict[str, float] = {}  # peak RSS per case, MB (printed at the end: pytest -s)
OUTCOMES: dict[str, str] = {}  # status and error per case (printed with them)

# Runs the worker and, once it has exited, writes the peak RSS of its whole process tree (KB):
# RUSAGE_CHILDREN covers every descendant that was waited for (pool processes, parser children).
WRAPPER = """
import resource, signal, subprocess, sys
worker = subprocess.Popen(sys.argv[2:])
for number in (signal.SIGTERM, signal.SIGINT):
    signal.signal(number, lambda signum, frame: worker.send_signal(signum))
code = worker.wait()
with open(sys.argv[1], "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


# ---- the worker process and its memory -------------------------------------------------------------------------------
def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


class MemoryWatch:
    """The peak RSS (VmHWM) of each process of a tree, read every 20 ms from another thread."""

    def __init__(self, root: int):
        import psutil

        self.root = psutil.Process(root)
        self.peaks: dict[int, int] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def pids(self) -> list[int]:
        import psutil

        try:
            return [self.root.pid, *(child.pid for child in self.root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for pid in self.pids():
                peak = _status_kb(pid, "VmHWM")
                with self.lock:
                    self.peaks[pid] = max(self.peaks.get(pid, 0), peak)

    @contextmanager
    def measure(self, name: str):
        """Record the largest peak RSS of any process of the tree while the block runs, as FIGURES[name]."""
        with self.lock:
            self.peaks = {}
            for pid in self.pids():  # start every living process's peak from its current size
                try:
                    Path(f"/proc/{pid}/clear_refs").write_text("5")
                except OSError:
                    pass
        yield
        time.sleep(0.05)
        with self.lock:
            FIGURES[name] = max(self.peaks.values(), default=0) / 1024

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class WorkerProcess:
    process: subprocess.Popen
    media: Path
    log: Path
    rusage: Path
    memory: MemoryWatch

    def stop(self) -> float | None:
        """Stop the worker (warm shutdown); the exact peak RSS of its tree in MB."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.memory.close()
        return int(self.rusage.read_text()) / 1024 if self.rusage.exists() else None

    def alive(self) -> bool:
        return self.process.poll() is None


@pytest.fixture(scope="module")
def worker_process(celery_app, django_db_setup, redis_service, tmp_path_factory):
    """``celery -A ragsite worker`` in its own process, on the test database, consuming its own queue."""
    from django.conf import settings
    from django.db import connection

    folder = tmp_path_factory.mktemp("hostile-worker")
    queue, name = f"rag-hostile-{os.getpid()}", f"hostile-{os.getpid()}@test"
    database = connection.settings_dict  # the test database (the settings keep no URL: it holds a password)
    where = urlencode({"host": database["HOST"], "port": database["PORT"] or 5432})
    database_url = urlunsplit(("postgresql", f"{quote(database['USER'])}:{quote(database['PASSWORD'])}@",
                               "/" + database["NAME"], where, ""))
    env = {
        **os.environ, "DJANGO_SETTINGS_MODULE": "ragsite.settings", "DATABASE_URL": database_url,
        "DATABASE_POOL": "false", "REDIS_URL": settings.REDIS_URL, "MEDIA_ROOT": str(folder / "media"),
        "EMBEDDING_BACKEND": "hashing", "PARSE_MAX_MEMORY_MB": str(WORKER_PARSE_MAX_MEMORY_MB),
        "CELERY_TASK_ALWAYS_EAGER": "false", "LOG_LEVEL": "WARNING",
    }
    log, rusage = folder / "worker.log", folder / "rusage-kb"
    process = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, str(rusage), sys.executable, "-m", "celery", "-A", "ragsite", "worker",
         "-Q", f"{queue},{queue}.large", "-n", name, "--concurrency", "1", "--without-gossip", "--without-mingle",
         "--without-heartbeat", "--loglevel", "WARNING"],
        cwd=Path(__file__).resolve().parents[2], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    worker = WorkerProcess(process, folder / "media", log, rusage, MemoryWatch(process.pid))
    previous = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = queue  # tasks sent by this module's uploads go to this worker
    try:
        deadline = time.monotonic() + 90
        while not celery_app.control.ping(destination=[name], timeout=1):
            if not worker.alive() or time.monotonic() > deadline:
                pytest.fail(f"the worker did not start:\n{log.read_text()[-3000:]}")
        yield worker
    finally:
        celery_app.conf.task_default_queue = previous
        worker.stop()
        if FIGURES:
            print("\npeak RSS per case (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in FIGURES.items()))
            print("\n".join(f"  {case}: {outcome}" for case, outcome in OUTCOMES.items()))


@pytest.fixture
def worker(worker_process, transactional_db, settings, media_root):
    """The worker, with this test's uploads stored where it reads them (committed: it is another process)."""
    if not worker_process.alive():
        pytest.fail(f"the worker died:\n{worker_process.log.read_text()[-3000:]}")
    settings.MEDIA_ROOT = worker_process.media
    return worker_process


# ---- the API ---------------------------------------------------------------------------------------------------------
def multipart(filename: str, data: bytes, content_type: str = "application/octet-stream") -> tuple[bytes, str]:
    """A multipart body with the file name exactly as given (Django's test client would strip its path)."""
    boundary = uuid.uuid4().hex
    quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Api:
    def __init__(self, client, user):
        self.client = client
        self.auth = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user=user)[1]}"}

    def upload(self, filename: str, data: bytes, content_type: str = "application/octet-stream"):
        body, multipart_type = multipart(filename, data, content_type)
        return self.client.post("/api/v1/documents", data=body, content_type=multipart_type, **self.auth)

    def upload_id(self, filename: str, data: bytes, content_type: str = "application/octet-stream") -> int:
        response = self.upload(filename, data, content_type)
        assert response.status_code == 202, response.content
        return response.json()["id"]

    def document(self, document_id: int) -> dict:
        return self.client.get(f"/api/v1/documents/{document_id}", **self.auth).json()

    def finished(self, document_id: int, worker: WorkerProcess) -> dict:
        deadline = time.monotonic() + FINISH_TIMEOUT
        while time.monotonic() < deadline:
            if Document.objects.get(pk=document_id).is_finished:
                return self.document(document_id)
            if not worker.alive():
                pytest.fail(f"the worker died:\n{worker.log.read_text()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"document {document_id} unfinished after {FINISH_TIMEOUT}s: {self.document(document_id)}")


@pytest.fixture
def api(client, user):
    return Api(client, user)


def assert_a_sentence(error: str) -> None:
    assert error and error[0].isupper() and error.endswith("."), repr(error)


# ---- generated hostile files -----------------------------------------------------------------------------------------
def deflated(parts: list[tuple[bytes, int]]) -> tuple[bytes, int, int]:
    """Raw deflate, CRC-32 and size of the parts' concatenation (each part repeated), compressed once per part.

    A full flush byte-aligns the stream and resets the history, so a repeated part compresses to the
    same bytes every time: a gigabyte of content costs one compression of its repeating unit.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream, crc, size = [], 0, 0
    for data, repeat in parts:
        once = compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)
        stream.append(once * repeat)
        for _ in range(repeat):
            crc = zlib.crc32(data, crc)
        size += len(data) * repeat
    stream.append(compressor.flush())
    return b"".join(stream), crc, size


def write_zip(entries: list[tuple[str, bytes, int, int]]) -> bytes:
    """A zip of (name, raw deflate data, crc, declared uncompressed size) entries."""
    out, central = bytearray(), bytearray()
    for name, data, crc, declared in entries:
        encoded = name.encode()
        fields = (20, 0, 8, 0, 0x21, crc, len(data), declared, len(encoded), 0)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0, len(out)) + encoded
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields) + encoded + data
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(out), 0)
    return bytes(out + central + end)


def docx_bomb(tmp_path: Path, unit: bytes, repeat: int, declared: int | None = None) -> bytes:
    """A real .docx whose word/document.xml is ``unit`` × ``repeat`` (its size declared as ``declared``)."""
    base = factory.make_docx(tmp_path / "base.docx", "Quarterly report", [("Summary", ["Nothing to see."])])
    entries = []
    with zipfile.ZipFile(base) as source:
        for info in source.infolist():
            raw = source.read(info)
            if info.filename == "word/document.xml":
                head = raw.split(b"<w:body>")[0] + b"<w:body>"
                data, crc, size = deflated([(head, 1), (unit, repeat), (b"</w:body></w:document>", 1)])
                size = size if declared is None else declared
            else:
                data, crc, size = deflated([(raw, 1)])
            entries.append((info.filename, data, crc, size))
    return write_zip(entries)


PARAGRAPHS = b"<w:p><w:r><w:t>boom</w:t></w:r></w:p>" * 27_000  # 1 MB of paragraphs
OUT_OF_MEMORY = r"^Reading the file needed more memory than this server allows; "


def many_pages(tmp_path: Path) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for number in range(6000):
        pdf.add_page()
        pdf.cell(0, 8, f"Page {number + 1} of a very long report.")
    return bytes(pdf.output())


def one_long_line(tmp_path: Path) -> bytes:
    words = b"lorem ipsum dolor sit amet consectetur adipiscing elit "
    size = 50 * 1024 * 1024 - 1024  # just under MAX_UPLOAD_MB=50, without a single line break
    return (words * (size // len(words) + 1))[:size]


@dataclass(frozen=True)
class Case:
    id: str
    filename: str
    build: object  # (tmp_path) -> bytes
    status: str
    reason: str = ""  # a regular expression the error must match
    contains: str = ""  # text a chunk of the ready document must hold


CASES = [
    Case("renamed-executable", "tool.pdf", lambda p: b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 64,
         "refused", r"^This file is a program .* Supported formats: PDF"),
    Case("docx-zip-bomb", "bomb.docx", lambda p: docx_bomb(p, b" " * (1 << 20), 1000),
         "failed", r"expands to 1,0\d\d MB of content, too large to process"),
    Case("docx-zip-bomb-lying-sizes", "liar.docx", lambda p: docx_bomb(p, PARAGRAPHS, 1100, declared=4096),
         "failed", OUT_OF_MEMORY),
    Case("docx-400mb-of-paragraphs", "huge.docx", lambda p: docx_bomb(p, PARAGRAPHS, 420),
         "failed", OUT_OF_MEMORY),
    Case("pdf-6000-pages", "long.pdf", many_pages, "failed", r"6,000 pages; the limit is 5,000\. Split it"),
    Case("one-50mb-line", "line.txt", one_long_line, "failed", r"characters of text; the limit is 10,000,000\."),
    Case("nested-html-100000", "nested.html",
         lambda p: b"<html><body>" + b"<div>" * 100_000 + b"The vault code is 4711." + b"</div>" * 100_000
         + b"</body></html>", "ready", contains="The vault code is 4711."),
    Case("nul-bytes-at-the-start", "nul.txt", lambda p: b"\x00\x00hello\x00world" * 100, "refused",
         r"not in a supported format"),
    Case("nul-bytes-inside", "nul-inside.txt",
         lambda p: b"Plain words here. " * 600 + b"\x00 after a NUL \x00 byte." + b" More words." * 10, "ready",
         contains=" after a NUL  byte."),
    Case("invalid-utf8", "latin.txt", lambda p: b"Caf\xc3 \xa9 na\xefve \xed\xa0\x80 \xff\xfe end. " * 50, "ready"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_hostile_file_ends_with_a_clear_status_in_bounded_memory(case, worker, api, tmp_path):
    data = case.build(tmp_path)
    if case.status == "refused":  # at upload, before anything is stored or queued
        response = api.upload(case.filename, data)
        OUTCOMES[case.id] = f"{len(data):,} bytes -> {response.status_code} {response.json()['detail']}"
        assert response.status_code == 415 and re.search(case.reason, response.json()["detail"]), response.json()
        return
    with worker.memory.measure(case.id):
        body = api.finished(api.upload_id(case.filename, data), worker)
    OUTCOMES[case.id] = f"{len(data):,} bytes -> {body['status']} {body['error']}"
    assert body["status"] == case.status, body
    if case.status == "failed":
        assert re.search(case.reason, body["error"]), body["error"]
        assert_a_sentence(body["error"])
    else:
        assert body["chunk_count"] > 0 and body["error"] == ""
        assert not case.contains or Chunk.objects.filter(document_id=body["id"], text__contains=case.contains).exists()
    assert FIGURES[case.id] < RSS_BOUND_MB, FIGURES


@pytest.mark.shared
def test_every_shared_fixture_ends_ready_or_failed_with_a_sentence(worker, api, fixtures_dir):
    ids = {}
    with worker.memory.measure("shared-fixtures"):
        for path in sorted(fixtures_dir.iterdir()):
            ids[path.name] = api.upload_id(path.name, path.read_bytes())
        results = {name: api.finished(document_id, worker) for name, document_id in ids.items()}
    for name, body in results.items():
        assert body["status"] in ("ready", "failed"), (name, body)
        if body["status"] == "failed":
            assert_a_sentence(body["error"])
        else:
            assert body["chunk_count"] > 0, name
        if name.startswith(("good", "odd")):
            assert body["status"] == "ready", (name, body["error"])
    assert "password-protected" in results["bad-encrypted.pdf"]["error"]
    assert "scanned images" in results["bad-image-only.pdf"]["error"]
    assert results["bad-empty.txt"]["error"] == "The file is empty; upload a copy that has the document's text in it."
    assert FIGURES["shared-fixtures"] < RSS_BOUND_MB, FIGURES


NAMES = {
    "../../etc/passwd.txt": "passwd.txt",
    "..\\..\\windows\\win.ini.txt": "win.ini.txt",
    "<img src=x onerror=alert(1)>.txt": "<img src=x onerror=alert(1)>.txt",
    "📄 Quarterly report 🚀.txt": "📄 Quarterly report 🚀.txt",
    "🚀🚀🚀": "🚀🚀🚀",
    "x" * 300 + ".txt": "x" * 196 + ".txt",
    "  spaced\tout .md": "spacedout .md",
}


def test_hostile_file_names_are_cleaned_stored_safely_and_escaped_on_the_page(worker, api, client, user):
    with worker.memory.measure("file-names"):
        ids = {name: api.upload_id(name, f"A document called {name!r}, number {n}.".encode(), "text/plain")
               for n, name in enumerate(NAMES)}
        results = {name: api.finished(document_id, worker) for name, document_id in ids.items()}
    media = Path(worker.media).resolve()
    for sent, expected in NAMES.items():
        assert results[sent]["status"] == "ready", (sent, results[sent])
        document = Document.objects.get(pk=ids[sent])
        assert document.original_filename == expected
        assert media in Path(document.file.path).resolve().parents  # stored under its checksum, in MEDIA_ROOT
        assert ".." not in document.file.name and len(document.title) <= 300
    client.force_login(user)
    page = client.get(reverse("documents:list")).content.decode()
    assert "<img src=x onerror" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "📄 Quarterly report 🚀" in page
    assert FIGURES["file-names"] < RSS_BOUND_MB, FIGURES


@pytest.mark.django_db
def test_a_name_that_is_only_a_path_is_a_clear_400(api):
    response = api.upload("../", b"nothing", "text/plain")
    assert response.status_code == 400 and "`file`" in response.json()["detail"]


@pytest.mark.django_db
def test_an_oversized_upload_is_refused_at_the_limit_and_never_stored(api, settings, tmp_path, monkeypatch):
    """50 MB + 1 KB against the default MAX_UPLOAD_MB=50: 413 with the limit; the bytes past it are never written."""
    assert settings.MAX_UPLOAD_BYTES == 50 * 1024 * 1024
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "spool")
    (tmp_path / "spool").mkdir()
    written = []
    store = TemporaryFileUploadHandler.receive_data_chunk
    monkeypatch.setattr(TemporaryFileUploadHandler, "receive_data_chunk",
                        lambda self, data, start: written.append(len(data)) or store(self, data, start))
    response = api.upload("huge.txt", b"x" * (settings.MAX_UPLOAD_BYTES + 1024), "text/plain")
    assert response.status_code == 413
    assert response.json()["detail"] == (
        "The file is larger than the limit of 50.0 MB; split it into smaller files and upload those.")
    assert sum(written) <= settings.MAX_UPLOAD_BYTES  # dropped at the limit: the rest never reached a file
    assert list((tmp_path / "spool").iterdir()) == []  # and the partial temporary file is gone
    assert Document.objects.count() == 0 and not any(Path(settings.MEDIA_ROOT).rglob("*.*"))


# Runs after the cases above (pytest keeps the file's order): the same worker, still alive, then stopped.
def test_the_worker_survived_and_its_memory_stayed_bounded(worker, api):
    body = api.finished(api.upload_id("after.txt", b"The worker is still alive and well.", "text/plain"), worker)
    assert body["status"] == "ready", body
    peak = worker.stop()
    FIGURES["whole-run-exact"] = peak
    assert peak is not None and peak < RSS_BOUND_MB, FIGURES


# ---- questions and queries -------------------------------------------------------------------------------------------
QUERIES = {
    # Hostile, and still questions about the handbook (the relevance gate answers "nothing found" to a
    # question whose words mostly occur nowhere: tests/test_extractive.py).
    "sql": "'; DROP TABLE documents_chunk; -- how many vacation days do employees receive per year",
    "unicode": "ünïcödé ✓ 漢字 🔥 \u202eevil: how many vacation days do employees receive per year? \U0001f600",
    "control": "vac\x00ation\x01\x1b[31m days\x7f\x08",
    "huge": " ".join(["vacation"] * 11_112),  # 100,007 characters
    "empty": "",
}


@pytest.fixture
def handbook(user, collection):
    document = services.document_create(
        owner=user, collection=collection, filename="vacation.txt", enqueue=False,
        file=factory_file(b"Employees receive twenty-five vacation days per year. Unused days expire in March."),
    )
    return pipeline.document_ingest(document_id=document.pk)


def factory_file(data: bytes):
    from django.core.files.base import ContentFile

    return ContentFile(data, name="vacation.txt")


@pytest.fixture
def llm(llm):
    llm.reply_text = "Twenty-five days a year [1]."
    return llm


@pytest.mark.django_db
@pytest.mark.parametrize("name", QUERIES)
def test_search_api_answers_hostile_queries(name, client, user, handbook):
    raw = ApiToken.issue(user=user)[1]
    response = client.get("/api/v1/search", {"q": QUERIES[name]}, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200, response.content[:500]
    results = response.json()["results"]
    if name == "empty":
        assert results == []
    else:  # every query here contains a word of the handbook
        assert results and results[0]["document_id"] == handbook.pk


def events_of(response) -> list[dict]:
    import json

    body = b"".join(response.streaming_content).decode()
    return [json.loads(line[6:]) for line in body.split("\n") if line.startswith("data: ") and line != "data: [DONE]"]


@pytest.mark.django_db
@pytest.mark.parametrize("name", QUERIES)
def test_the_chat_page_answers_or_refuses_hostile_questions_clearly(name, client, user, handbook, llm):
    client.force_login(user)
    conversation = Conversation.objects.create(owner=user)
    response = client.post(reverse("chat:ask", args=[conversation.pk]), {"question": QUERIES[name]})
    if name == "empty":
        assert response.status_code == 400 and response.content == b"Type a question first."
        return
    if name == "huge":
        assert response.status_code == 400
        assert response.content.decode() == ("The question is 100,007 characters long; the limit is 4,000. "
                                             "Ask a shorter question, or upload the long text as a document.")
        assert not Message.objects.exists()
        return
    assert response.status_code == 200
    done = events_of(response)[-1]
    assert done["type"] == "done" and done["error"] == ""
    assert done["content"] == "Twenty-five days a year [1]." and done["citations"][0]["document_id"] == handbook.pk
    saved = Message.objects.get(conversation=conversation, role="user").content
    assert saved == QUERIES[name].strip().replace("\x00", "").replace("\x01", "").replace("\x1b", "").replace(
        "\x7f", "").replace("\x08", "")


@pytest.mark.django_db
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("name", QUERIES)
def test_chat_completions_answer_or_refuse_hostile_questions_in_openais_shape(name, stream, client, user, handbook,
                                                                              llm):
    raw = ApiToken.issue(user=user)[1]
    response = client.post(
        "/v1/chat/completions",
        {"model": "rag", "stream": stream, "messages": [{"role": "user", "content": QUERIES[name]}]},
        content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    if name in ("empty", "huge"):
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["message"] == ("The last message must be a non-empty user message." if name == "empty" else
                                    "The question is 100,007 characters long; the limit is 4,000. "
                                    "Ask a shorter question, or upload the long text as a document.")
        return
    assert response.status_code == 200
    if stream:
        chunks = events_of(response)
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
        citations = chunks[-1]["citations"]
    else:
        body = response.json()
        text, citations = body["choices"][0]["message"]["content"], body["citations"]
    assert text == "Twenty-five days a year [1]." and citations[0]["document_id"] == handbook.pk
    assert "\x00" not in llm.last_messages[-1]["content"]


# ---- odd ids and odd bodies ------------------------------------------------------------------------------------------
# Values that are not ids, each a way a parser of ids has failed: Unicode digits (``"²".isdigit()`` is true but
# ``int("²")`` raises; ``int("٣")`` is 3), signs, spaces, NUL, numbers past a bigint, and no value at all.
ODD_IDS = ["²", "1²", "٣", "１２", "３", "-1", "0", "9223372036854775808", "1" * 40, " 7", "7\n", "1\x00", "\x00", "",
           "1e3", "0x1f", "1.0", "🙂", "%", "%00"]


def _odd_id_sites():
    """Every place a request carries an id: the URL patterns of the access-control table, and the ids in query
    strings, forms, JSON bodies and model names (a new one belongs here too)."""
    def path(method, url, data, api):
        def send(client, things, odd):
            filled = url.format_map(defaultdict(lambda: quote(odd, safe="")))  # every {id} in the URL
            return things["call"](client, method, filled, {key: odd for key in (data or {})}, api=api)
        return send

    sites = {f"{method} {url}": path(method, url, data, route.startswith(("api/", "v1/")))
             for route, method, url, data in PAGES + API}
    sites.update({
        "page ?chunk=": lambda c, t, odd: c.get(f"/documents/{t['document'].pk}/", {"chunk": odd}),
        "page status.json?id=": lambda c, t, odd: c.get("/documents/status.json", {"id": [odd, t["document"].pk]}),
        "page new conversation's collection": lambda c, t, odd: c.post("/chat/new/", {"collection": odd}),
        "page question's document filter": lambda c, t, odd: c.post(
            f"/chat/{t['conversation'].pk}/ask/", {"question": "vacation days", "document": odd}),
        "page upload's collection": lambda c, t, odd: c.post(
            "/documents/", {"collection": odd, "files": factory_file(b"Odd ids find nothing.")},
            HTTP_ACCEPT="application/json"),
        "api search's collection": lambda c, t, odd: c.get(
            "/api/v1/search", {"q": "vacation", "collection": odd}, **t["auth"]),
        "api upload's collection": lambda c, t, odd: c.post(
            "/api/v1/documents", {"collection": odd, "file": factory_file(b"Odd ids find nothing.")}, **t["auth"]),
        "openai model rag-collection-": lambda c, t, odd: c.post(
            "/v1/chat/completions", {"model": f"rag-collection-{odd}", "messages": [{"role": "user", "content": "x"}]},
            content_type="application/json", **t["auth"]),
    })
    return sites


ODD_ID_SITES = _odd_id_sites()


@pytest.fixture
def odd_things(client, user, handbook):
    client.force_login(user)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user=user)[1]}"}

    def call(client, method, url, data, *, api):
        headers = auth if api else {}
        if method == "get":
            return client.get(url, **headers)
        if method == "delete":
            return client.delete(url, **headers)
        return client.post(url, data or {}, **headers)

    conversation = Conversation.objects.create(owner=user, collection=handbook.collection)
    return {"document": handbook, "conversation": conversation, "auth": auth, "call": call}


@pytest.mark.django_db
@pytest.mark.parametrize("site", ODD_ID_SITES)
def test_no_odd_id_anywhere_makes_the_server_fail(site, client, odd_things, llm):
    failures = {}
    for odd in ODD_IDS:
        response = ODD_ID_SITES[site](client, odd_things, odd)
        if response.status_code >= 500:
            failures[odd] = (response.status_code, getattr(response, "content", b"")[:200])
    assert failures == {}


@pytest.mark.django_db
def test_no_odd_value_in_the_admin_makes_it_fail(client, django_user_model, handbook):
    """Django's admin checks its change lists' parameters itself, but its autocomplete view (the owner and user
    pickers) passed a NUL on to PostgreSQL."""
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw"))
    failures = {}
    for odd in ODD_IDS:
        for url, query in [
            ("/admin/documents/document/", {"q": odd}),
            ("/admin/documents/document/", {"collection__id__exact": odd}),
            (f"/admin/documents/document/{quote(odd, safe='')}/change/", {}),
            ("/admin/auth/user/", {"q": odd}),
            ("/admin/autocomplete/", {"app_label": "documents", "model_name": "collection", "field_name": "owner",
                                      "term": odd}),
            ("/admin/autocomplete/", {"app_label": "core", "model_name": "apitoken", "field_name": "user",
                                      "term": f"ro{odd}"}),
        ]:
            response = client.get(url, query)
            if response.status_code >= 500:
                failures[(url, odd)] = response.status_code
    assert failures == {}


def unicode_digits(number: int, zero: str) -> str:
    """``number`` written with the digits that start at ``zero`` (e.g. "٠", Arabic-Indic; "０", fullwidth)."""
    return "".join(chr(ord(zero) + int(digit)) for digit in str(number))


@pytest.mark.django_db
@pytest.mark.parametrize("zero", ["٠", "０"], ids=["arabic-indic", "fullwidth"])
def test_an_id_in_other_digits_is_not_an_alias_of_the_id(zero, client, user, handbook):
    """Only ASCII digits spell an id: ``rag-collection-٣`` is not collection 3."""
    spelled = unicode_digits(handbook.collection_id, zero)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user=user)[1]}"}
    model = client.post("/v1/chat/completions", {"model": f"rag-collection-{spelled}",
                                                 "messages": [{"role": "user", "content": "vacation"}]},
                        content_type="application/json", **auth)
    assert model.status_code == 404 and model.json()["error"]["type"] == "invalid_request_error"
    search = client.get("/api/v1/search", {"q": "vacation", "collection": spelled}, **auth)
    assert search.status_code == 404, search.content
    client.force_login(user)
    new = client.post("/chat/new/", {"collection": spelled})
    assert new.status_code == 400 and not Conversation.objects.exists()
    status = client.get("/documents/status.json", {"id": unicode_digits(handbook.pk, zero)})
    assert status.json()["documents"] == []  # asked for ids, none of them one: nothing, not everything


def test_ids_are_parsed_in_one_place():
    """No code outside core.http.parse_id tells digits with str.isdigit/isdecimal/isnumeric (all accept "²")."""
    root = Path(__file__).resolve().parents[2]
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for app in ("audit", "chat", "core", "documents", "ragsite")
        for path in sorted((root / app).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\.is(digit|decimal|numeric)\(", line)
    ]
    assert offenders == [], "parse ids with core.http.parse_id"


@pytest.mark.django_db
@pytest.mark.parametrize("part", [{"type": "text", "text": 5}, {"type": "text", "text": None},
                                  {"type": "text", "text": ["vacation"]}, {"type": "text", "text": {"a": 1}},
                                  {"type": "text"}, "vacation", 5, None],
                         ids=["int", "null", "list", "object", "missing", "bare-string", "bare-int", "bare-null"])
def test_a_content_part_without_string_text_is_a_clear_400(part, client, user, handbook):
    raw = ApiToken.issue(user=user)[1]
    response = client.post(
        "/v1/chat/completions",
        {"model": "rag", "messages": [{"role": "user", "content": [{"type": "text", "text": "vacation"}, part]}]},
        content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "messages[0].content[1]"
    assert error["message"].startswith("Invalid content part 'messages[0].content[1]': ")


@pytest.mark.django_db
def test_text_and_image_parts_are_still_read(client, user, handbook):
    raw = ApiToken.issue(user=user)[1]
    content = [{"type": "text", "text": "How many vacation days"}, {"type": "image_url", "image_url": {"url": "x"}},
               {"type": "text", "text": "per year?"}]
    response = client.post("/v1/chat/completions", {"model": "rag", "messages": [{"role": "user", "content": content}]},
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200 and response.json()["citations"][0]["document_id"] == handbook.pk


LONE_SURROGATE = "vacation \ud800 days"


@pytest.mark.django_db
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_lone_surrogate_in_an_api_question_is_dropped(stream, client, user, handbook, llm):
    import json

    raw = ApiToken.issue(user=user)[1]
    body = {"model": "rag", "stream": stream, "messages": [
        {"role": "user", "content": "earlier \udfff"}, {"role": "assistant", "content": "reply \ud800"},
        {"role": "user", "content": [{"type": "text", "text": LONE_SURROGATE}]}]}
    response = client.post("/v1/chat/completions", json.dumps(body), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200, response.content
    sent = json.dumps(llm.last_messages, ensure_ascii=False)
    assert not re.search("[\ud800-\udfff]", sent) and "vacation  days" in llm.last_messages[-1]["content"]


@pytest.mark.django_db
def test_a_lone_surrogate_in_a_page_question_or_a_search_is_no_failure(client, user, handbook, llm):
    from documents import search as retrieval

    client.force_login(user)
    conversation = Conversation.objects.create(owner=user)
    # Forms and query strings decode invalid UTF-8 (an encoded surrogate) to U+FFFD; the services drop a
    # surrogate whoever calls them.
    response = client.post(reverse("chat:ask", args=[conversation.pk]), "question=vacation+%ED%A0%80+days",
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200 and events_of(response)[-1]["error"] == ""
    raw = ApiToken.issue(user=user)[1]
    search = client.get("/api/v1/search?q=vacation+%ED%A0%80", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert search.status_code == 200 and search.json()["results"][0]["document_id"] == handbook.pk
    for mode in ("hybrid", "keyword", "vector"):
        hits = retrieval.search(user=user, query=LONE_SURROGATE, mode=mode)
        assert hits and hits[0].document_id == handbook.pk
    with pytest.raises(retrieval.UnknownCollection):  # no collection has that name: not an encoding error
        retrieval.search(user=user, query="vacation", filters=retrieval.Filters(collection="Handbook \ud800"))


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["HR\x00", "\x00", "H\x01R"], ids=["nul-after", "nul", "control"])
def test_a_control_character_in_an_upload_collection_is_a_clear_400(name, client, user, media_root):
    expected = "A collection name cannot contain control characters; use letters, digits and spaces."
    raw = ApiToken.issue(user=user)[1]
    api = client.post("/api/v1/documents", {"collection": name, "file": factory_file(b"Nothing stored.")},
                      HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.status_code == 400 and api.json()["detail"] == expected
    client.force_login(user)
    page = client.post("/documents/", {"collection": name, "files": factory_file(b"Nothing stored.")},
                       HTTP_ACCEPT="application/json")
    assert page.status_code == 400 and page.json()["detail"] == expected
    form = client.post("/documents/", {"collection": name, "files": factory_file(b"Nothing stored.")}, follow=True)
    assert form.status_code == 200 and expected in form.content.decode()
    assert Document.objects.count() == 0 and not any(Path(media_root).rglob("*.*"))


TOO_BIG = ("The form fields or JSON body of the request are larger than the limit of 2.0 MB. "
           "Upload documents as files, and keep questions shorter.")


@pytest.mark.django_db
def test_a_json_body_over_the_memory_limit_is_a_413_with_the_limit(client, user):
    import json

    raw = ApiToken.issue(user=user)[1]
    body = json.dumps({"model": "rag", "messages": [{"role": "user", "content": "x" * (3 * 1024 * 1024)}]})
    response = client.post("/v1/chat/completions", body, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 413, response.content[:300]
    assert response.json()["error"] == {"message": TOO_BIG, "type": "invalid_request_error", "param": None,
                                        "code": "request_too_large"}


@pytest.mark.django_db
def test_a_form_field_over_the_memory_limit_is_a_413_with_the_limit(client, user):
    huge = "x" * (3 * 1024 * 1024)
    raw = ApiToken.issue(user=user)[1]
    api = client.post("/api/v1/documents", {"collection": huge, "file": factory_file(b"Nothing stored.")},
                      HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.status_code == 413 and api.json() == {"detail": TOO_BIG}
    client.force_login(user)
    upload = client.post("/documents/", {"collection": huge, "files": factory_file(b"Nothing stored.")},
                         HTTP_ACCEPT="application/json")
    assert upload.status_code == 413 and upload.json() == {"detail": TOO_BIG}
    conversation = Conversation.objects.create(owner=user)
    question = client.post(reverse("chat:ask", args=[conversation.pk]), {"question": huge})
    assert question.status_code == 413 and TOO_BIG in question.content.decode()
    assert "<h1>Too large</h1>" in question.content.decode()
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)  # the CSRF check is the first to read a page's form
    browser.force_login(user)
    browser.get(reverse("chat:detail", args=[conversation.pk]))  # the CSRF cookie
    checked = browser.post(reverse("chat:ask", args=[conversation.pk]), {"question": huge})
    assert checked.status_code == 413 and TOO_BIG in checked.content.decode()
    assert Document.objects.count() == 0 and not Message.objects.exists()
