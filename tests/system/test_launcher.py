"""`make run` end to end: ragsite.launcher on a fresh data folder, as a new user would start it.

It starts its own embedded PostgreSQL under a temporary RAG_VAR_DIR, migrates, creates the first
administrator, runs the Celery worker and uvicorn; a document uploaded through the API is
processed; Ctrl-C (SIGINT) stops the worker, the web server and the database. A worker killed with
SIGKILL is replaced while the site keeps answering, the document it was processing resumes, and no
process of the launcher survives it.
processed; Ctrl-C (SIGINT) stops the worker, the web server and the database. It runs as a user gets it:
production settings (DEBUG off) with its own secret key, and a browser can sign in over plain HTTP.
"""

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.system import offline_first_run

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url, headers=None, timeout=5):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def wait_for(predicate, timeout, what):
    return offline_first_run.wait_for(predicate, timeout, what, every=0.5)


@pytest.fixture
def launch(tmp_path):
    """Start `make run`'s launcher on ``tmp_path``'s data folder; each call starts it again on the same data."""
    port = free_port()
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    env = {
        **os.environ,
        "RAG_VAR_DIR": str(tmp_path / "var"),
        "PORT": str(port),
        # A Redis of its own, which the launcher starts (and stops): a shared one would let the workers of other
        # test runs take this run's tasks and answer its pings.
        "REDIS_URL": redis_url,
        "ADMIN_PASSWORD": "launcher-test-password",
        "EMBEDDING_BACKEND": "hashing",
        "WORKER_CONCURRENCY": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("DATABASE_URL", "DEBUG", "SECRET_KEY", "SECRET_KEY_FILE"):  # the defaults, as `make run` has them
        env.pop(name, None)
    processes = []

    def start(name: str = "launcher", **extra_env: str):
        log = (tmp_path / f"{name}.log").open("w+")
        process = subprocess.Popen(
            [sys.executable, "-m", "ragsite.launcher"], cwd=ROOT, env={**env, **extra_env}, stdout=log,
            stderr=subprocess.STDOUT,
        )
        processes.append(process)
        return process, f"http://127.0.0.1:{port}", tmp_path, log

    start.redis_url = redis_url
    try:
        yield start
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        from ragsite.devservices import stop_embedded_database, stop_redis

        stop_embedded_database(tmp_path / "var")  # only if the launcher did not
        stop_redis(redis_url)


def stop_with_ctrl_c(process, base: str, tmp_path: Path, log) -> str:
    """Ctrl-C: the launcher stops the worker, the web server and the database, and exits 0; its output."""
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=60)
    log.seek(0)
    output = log.read()
    assert code == 0, output[-3000:]
    assert "Stopped." in output
    assert not (tmp_path / "var" / "pgdata" / "postmaster.pid").exists()  # the database stopped too
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{base}/healthz", timeout=2)
    return output


def sign_in_over_http(base: str, username: str, password: str):
    """Sign in as a browser does (a cookie jar that, like a browser, never sends a Secure cookie over http://)."""
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with browser.open(f"{base}/accounts/login/", timeout=10) as response:
        page = response.read().decode()
    assert "createsuperuser" not in page  # no advice for operators on the users' page
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token})
    with browser.open(f"{base}/accounts/login/", data=form.encode(), timeout=10) as response:
        assert response.url == f"{base}/documents/", response.read().decode()[-2000:]  # signed in, redirected
    return browser, jar


def assert_production_pages(base: str, browser) -> None:
    """Static files served without DEBUG; the friendly 404 page, no list of URL patterns."""
    with browser.open(f"{base}/documents/", timeout=10) as response:
        stylesheet = re.search(r'href="(/static/[^"]+\.css)"', response.read().decode()).group(1)
    with browser.open(f"{base}{stylesheet}", timeout=10) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/css")
    with pytest.raises(urllib.error.HTTPError) as missing:
        browser.open(f"{base}/no-such-page/", timeout=10)
    assert missing.value.code == 404
    page = missing.value.read().decode()
    assert "This page does not exist" in page and "URLconf" not in page


def test_make_run_serves_processes_a_document_and_stops_cleanly_and_a_second_run_reuses_the_data(launch):
    process, base, tmp_path, log = launch()
    health = wait_for(
        lambda: (r := get_json(f"{base}/healthz"))[0] == 200 and r[1]["workers"] >= 1 and r[1],
        timeout=120, what="a healthy server with a live worker",
    )
    assert health["database"] == "ok" and health["pgvector"].startswith("0.")
    log.seek(0)
    assert "Created the administrator account  admin / launcher-test-password" in log.read()
    key_file = tmp_path / "var" / "secret_key"
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_text()) >= 50
    browser, jar = sign_in_over_http(base, "admin", "launcher-test-password")
    assert {cookie.name for cookie in jar} >= {"sessionid", "csrftoken"}
    assert_production_pages(base, browser)

    token = api_token(tmp_path, launch.redis_url)
    boundary = "----launcher-test"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\n"
        "Content-Type: text/plain\r\n\r\nThe launcher test document talks about lighthouses.\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    request = urllib.request.Request(
        f"{base}/api/v1/documents", data=body, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
        document_id = json.loads(response.read())["id"]
    auth = {"Authorization": f"Bearer {token}"}
    done = wait_for(
        lambda: (r := get_json(f"{base}/api/v1/documents/{document_id}", auth)[1])["status"] in ("ready", "failed")
        and r,
        timeout=60, what="the document to be processed by the launcher's worker",
    )
    assert done["status"] == "ready" and done["chunk_count"] == 1, done

    stop_with_ctrl_c(process, base, tmp_path, log)

    # A second `make run` on the same folder: the same database, documents and administrator.
    process, base, tmp_path, log = launch("second")
    wait_for(lambda: (r := get_json(f"{base}/healthz"))[0] == 200 and r[1]["workers"] >= 1,
             timeout=120, what="the second run to be healthy")
    again = get_json(f"{base}/api/v1/documents/{document_id}", auth)[1]
    assert again["status"] == "ready" and again["chunk_count"] == 1, again
    # The same secret key: the session of the first run is still signed in.
    with browser.open(f"{base}/documents/", timeout=10) as response:
        assert response.url == f"{base}/documents/"
    output = stop_with_ctrl_c(process, base, tmp_path, log)
    assert "Created the administrator account" not in output  # no second administrator on existing data


LONG_TEXT = "\n\n".join(f"Section {i}. The archive keeps every signed contract for ten years. " * 25
                        for i in range(16))


def api_token(tmp_path: Path, redis_url: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", "create_api_token", "admin"], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "RAG_VAR_DIR": str(tmp_path / "var"), "REDIS_URL": redis_url}, check=True,
    ).stdout.strip().splitlines()[-1]


def upload(base: str, token: str, name: str, text: str) -> int:
    boundary = "----launcher-test"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
        f"Content-Type: text/plain\r\n\r\n{text}\r\n--{boundary}--\r\n"
    ).encode()
    request = urllib.request.Request(
        f"{base}/api/v1/documents", data=body, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
        return json.loads(response.read())["id"]


def the_workers(launcher: subprocess.Popen) -> list[psutil.Process]:
    """The Celery workers' main processes: the launcher's children running `celery ... worker`."""
    return [child for child in psutil.Process(launcher.pid).children()
            if "celery" in child.cmdline() and "worker" in child.cmdline()]


def the_worker(launcher: subprocess.Popen) -> psutil.Process:
    """The main process of the worker with the beat, which takes large documents (the other takes small ones)."""
    return wait_for(lambda: next((child for child in the_workers(launcher) if "-B" in child.cmdline()), None),
                    timeout=30, what="the launcher's worker")


def output(log) -> str:
    log.seek(0)
    return log.read()


def test_a_killed_worker_is_restarted_the_site_stays_up_its_document_resumes_and_nothing_survives_the_stop(
    launch, openai_server
):
    openai_server.delay(0.3, times=100_000)  # every embedding batch takes 0.3 s: a run lasts long enough to kill
    process, base, tmp_path, log = launch(
        "supervised", EMBEDDING_BACKEND="openai", EMBEDDING_MODEL="text-embedding-3-small",
        OPENAI_BASE_URL=openai_server.url, OPENAI_API_KEY="test-key", EMBEDDING_BATCH_SIZE="2",
        LLM_BACKEND="extractive",
        INGEST_LARGE_BYTES="10000",  # the long text goes to the worker killed below; the note to the other
    )
    wait_for(lambda: (r := get_json(f"{base}/healthz"))[0] == 200 and r[1]["workers"] >= 1,
             timeout=120, what="a healthy server with a live worker")
    token = api_token(tmp_path, launch.redis_url)
    auth = {"Authorization": f"Bearer {token}"}

    def document(document_id):
        return get_json(f"{base}/api/v1/documents/{document_id}", auth)[1]

    running = upload(base, token, "contracts.txt", LONG_TEXT)
    wait_for(lambda: (d := document(running))["status"] == "processing" and d["progress"] >= 0.2,
             timeout=120, what="the worker to be well into the document")
    worker = the_worker(process)
    left_behind = [worker, *worker.children(recursive=True)]
    assert len(left_behind) >= 3, left_behind  # the main process, its pool process and its beat
    worker.kill()  # SIGKILL to the main process alone, as the OOM killer would

    # The site keeps answering, and takes uploads, while the worker is down and restarted.
    status, health = get_json(f"{base}/healthz")
    assert status == 200 and health["database"] == "ok", health
    queued = upload(base, token, "note.txt", "A short note about lighthouses, uploaded while the worker was down.")
    wait_for(lambda: "The worker exited (killed by SIGKILL); restarting it in" in output(log), timeout=30,
             what="the launcher to say it restarts the worker")
    _, alive = psutil.wait_procs(left_behind, timeout=30)
    assert alive == [], alive  # no orphaned pool or beat process keeps running (or sending tasks)
    wait_for(lambda: "Restarted the worker" in output(log), timeout=30, what="the new worker")

    done = wait_for(lambda: (d := document(queued))["status"] in ("ready", "failed") and d, timeout=120,
                    what="the document queued while the worker was down")
    assert done["status"] == "ready", done
    # The interrupted document resumes once its heartbeat is a minute old (INGEST_STALE_SECONDS, by default),
    # not after 12 minutes, nor when the broker redelivers its task after an hour (CELERY_VISIBILITY_TIMEOUT).
    resumed = wait_for(lambda: (d := document(running))["status"] in ("ready", "failed") and d, timeout=240,
                       what="the interrupted document to resume and finish")
    assert resumed["status"] == "ready" and resumed["chunk_count"] > 1, resumed
    assert "ingestion sweep: restarted=1" in output(log)

    # Stopped workers answer no ping: live (200) but degraded, and not ready.
    stopped = the_workers(process)  # every one (from WORKER_CONCURRENCY=2 on, one is kept for small documents)
    assert stopped
    for worker in stopped:
        worker.suspend()
    try:
        status, health = get_json(f"{base}/healthz")
        assert status == 200 and health["status"] == "degraded" and health["workers"] == 0, health
        assert get_json(f"{base}/readyz")[0] == 503
    finally:
        for worker in stopped:
            worker.resume()

    launcher = psutil.Process(process.pid)
    everything = launcher.children(recursive=True)
    groups = {os.getpgid(child.pid) for child in everything} - {os.getpgid(process.pid)}
    stop_with_ctrl_c(process, base, tmp_path, log)
    _, alive = psutil.wait_procs(everything, timeout=15)
    assert alive == [], alive
    survivors = [p for p in psutil.process_iter(["pid"]) if _group(p.pid) in groups]
    assert survivors == [], survivors


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_a_launcher_killed_with_sigkill_takes_its_worker_and_web_server_with_it(launch):
    process, base, tmp_path, log = launch("killed")
    wait_for(lambda: (r := get_json(f"{base}/healthz"))[0] == 200 and r[1]["workers"] >= 1,
             timeout=120, what="a healthy server with a live worker")
    everything = psutil.Process(process.pid).children(recursive=True)
    assert len(everything) >= 4, everything  # the web server, the worker, its pool and its beat
    process.kill()  # no chance to clean up: the children are told by the kernel (PR_SET_PDEATHSIG)
    process.wait()
    _, alive = psutil.wait_procs(everything, timeout=60)
    assert alive == [], [(p.pid, p.cmdline()) for p in alive]
