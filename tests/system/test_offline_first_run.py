"""The default path as a user meets it: a clean copy of the repository, `make run`'s launcher, no internet.

A network namespace with only loopback (``unshare --net``, as root) stands for a machine that reached the
package registries for `make install` and nothing since. None of the variables the other tests use
(``RAG_SHARED_DIR``, ``TIKTOKEN_CACHE_DIR``, ``EMBEDDING_MODEL_PATH``, ``EMBEDDING_BACKEND``, …) is set, and
HOME, TMPDIR and the cache folders are new and empty, so no file cached by an earlier run can help. The
launcher starts its own embedded PostgreSQL and its own Redis; a PDF, a DOCX and a Markdown file are
uploaded through the API, become ready with the real local embedding model, and a question is answered with
a citation of the right document.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import IN_CI, require_shared

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("offline_first_run.py")
FACT = "The Zephyr warehouse in Tromso stores 4,200 pallets of cloudberries every winter."
QUESTION = "How many pallets of cloudberries does the Zephyr warehouse store?"
# Variables of the test environment (and of a developer's shell) that the product must not need.
STRIPPED_PREFIXES = ("RAG_", "TIKTOKEN_", "EMBEDDING_", "HF_", "FASTEMBED_", "LLM_", "OPENAI_", "DJANGO_",
                     "DATABASE_", "REDIS_", "CELERY_", "PYTEST_")
STRIPPED = {"DEBUG", "SECRET_KEY", "PORT", "HOST", "MEDIA_ROOT", "ALLOWED_HOSTS", "SENTENCE_TRANSFORMERS_HOME",
            "TRANSFORMERS_CACHE", "XDG_CACHE_HOME", "XDG_DATA_HOME", "TMPDIR", "HOME"}


def can_isolate_network() -> str | None:
    """None when ``unshare --net`` works here, else why not."""
    if os.geteuid() != 0:
        return "needs root for `unshare --net`"
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs `unshare` (util-linux) and `ip` (iproute2)"
    probe = subprocess.run(["unshare", "--net", "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    if probe.returncode:
        return f"`unshare --net` failed: {probe.stderr.strip()}"
    return None


def clean_copy(destination: Path) -> Path:
    """The repository's files as a fresh clone has them (tracked and new, never ignored: no var/, no caches)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    # What `make install` left: the virtual environment with the packages from the registries.
    (destination / ".venv").symlink_to(Path(sys.prefix))
    return destination


def make_pdf(path: Path) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 8, "Northern storage report.\n\n" + FACT + "\n\nThe pallets are counted each March "
                   "by the harbour office, which also inspects the cooling units.")
    pdf.output(str(path))
    return path


def offline_environment(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in STRIPPED and not key.startswith(STRIPPED_PREFIXES)}
    for name in ("home", "tmp", "cache"):
        (home / name).mkdir(parents=True)
    env.update({
        "HOME": str(home / "home"), "TMPDIR": str(home / "tmp"), "XDG_CACHE_HOME": str(home / "cache"),
        "ADMIN_PASSWORD": "offline-first-run", "PYTHONUNBUFFERED": "1",
    })
    return env


@pytest.fixture
def tmp_path():
    """A folder of this test's own in the system's temporary folder, not below pytest's.

    The embedded PostgreSQL runs as its own user when started by root, so it must reach the clone's data folder;
    pytest keeps its temporary root at mode 0700 and sets it back whenever another pytest run starts (another
    checkout's tests, say), which would lock the database out in the middle of this test.
    """
    folder = Path(tempfile.mkdtemp(prefix="rag-offline-first-run-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_make_run_on_a_machine_without_internet_ingests_and_answers_with_the_local_model(tmp_path):
    reason = can_isolate_network()
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    fixtures = require_shared("data/fixtures")
    clone = clean_copy(tmp_path / "clone")
    files = [make_pdf(tmp_path / "storage-report.pdf"), fixtures / "good.docx", fixtures / "good-codeblock.md"]

    run = subprocess.run(
        ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$0" "$@"',
         sys.executable, str(DRIVER), str(clone), *map(str, files), QUESTION],
        cwd=clone, env=offline_environment(tmp_path / "user"), capture_output=True, text=True, timeout=1400,
    )
    assert run.returncode == 0, run.stderr[-5000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    context = f"\nlauncher log:\n{seen.get('log_tail', '')}\nstderr:\n{run.stderr[-3000:]}"
    assert seen["errors"] == [], seen["errors"] + [context]

    by_file = {doc["file"]: doc for doc in seen["documents"]}
    for path in files:
        doc = by_file[path.name]
        assert doc["status"] == "ready" and doc["chunk_count"] >= 1, (doc, context)

    health = seen["health"]
    assert health["status"] == "ok", (health, context)
    embeddings = health["embeddings"]
    assert embeddings["backend"] in ("auto", "local") and "MiniLM" in embeddings["model"], (health, context)
    assert embeddings["fallback"] is False and embeddings["error"] is None, (health, context)
    assert "NO EMBEDDING MODEL COULD BE LOADED" not in seen["log_tail"], context

    assert seen["chat_status"] == 200, (seen["chat"], context)
    answer = seen["chat"]["choices"][0]["message"]["content"]
    cited = {citation["document_id"] for citation in seen["chat"]["citations"]}
    assert by_file["storage-report.pdf"]["id"] in cited, (seen["chat"], context)
    assert "4,200" in answer, (answer, context)
    assert seen["launcher_exit"] == 0, context
