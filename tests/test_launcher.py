"""`make run` end to end: ragsite.launcher on a fresh data folder, as a new user would start it.

It starts its own embedded PostgreSQL under a temporary RAG_VAR_DIR, migrates, creates the first
administrator, runs the Celery worker and uvicorn; a document uploaded through the API is
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
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def launch(tmp_path):
    """Start `make run`'s launcher on ``tmp_path``'s data folder; each call starts it again on the same data."""
    port = free_port()
    env = {
        **os.environ,
        "RAG_VAR_DIR": str(tmp_path / "var"),
        "PORT": str(port),
        "REDIS_URL": "redis://127.0.0.1:6379/14",  # away from a developer's `make run` on db 0
        "ADMIN_PASSWORD": "launcher-test-password",
        "EMBEDDING_BACKEND": "hashing",
        "WORKER_CONCURRENCY": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("DATABASE_URL", "DEBUG", "SECRET_KEY", "SECRET_KEY_FILE"):  # the defaults, as `make run` has them
        env.pop(name, None)
    processes = []

    def start(name: str = "launcher"):
        log = (tmp_path / f"{name}.log").open("w+")
        process = subprocess.Popen(
            [sys.executable, "-m", "ragsite.launcher"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        processes.append(process)
        return process, f"http://127.0.0.1:{port}", tmp_path, log

    try:
        yield start
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        from ragsite.services import stop_embedded_database

        stop_embedded_database(tmp_path / "var")  # only if the launcher did not


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

    token = subprocess.run(
        [sys.executable, "manage.py", "create_api_token", "admin"], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "RAG_VAR_DIR": str(tmp_path / "var"), "REDIS_URL": "redis://127.0.0.1:6379/14"},
        check=True,
    ).stdout.strip().splitlines()[-1]
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
