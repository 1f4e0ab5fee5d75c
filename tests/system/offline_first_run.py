"""Drive `make run`'s launcher as a new user would, on a machine without internet.

Run by tests/system/test_offline_first_run.py inside a network namespace that has only loopback
(``unshare --net``): the launcher starts from a clean copy of the repository with none of the
test variables set, then this script uploads a PDF, a DOCX and a Markdown file through the API,
waits until each is ready, asks a question through the OpenAI-compatible API and prints one JSON
line with what it saw (the last line of its output). Nothing here decides pass or fail: the test does.

Usage: python offline_first_run.py CLONE_DIR PDF DOCX MARKDOWN QUESTION
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

PORT = 8000  # the default: nothing else runs in this namespace


def request(method: str, url: str, *, token: str = "", body: bytes | None = None,
            content_type: str = "", timeout: float = 30) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if content_type:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw or b"{}")
        except ValueError:
            return error.code, {"raw": raw[:500].decode(errors="replace")}


def wait_for(predicate, timeout: float, what: str, launcher: subprocess.Popen | None = None, every: float = 1.0):
    """The predicate's first true value, polled every ``every`` s; fails at the timeout or when the launcher
    exits (tests/system/test_launcher.py uses it too)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if launcher is not None and launcher.poll() is not None:
            raise RuntimeError(f"the launcher exited ({launcher.returncode}) while waiting for {what}")
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError):
            pass
        time.sleep(every)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def upload(base: str, token: str, path: Path) -> dict:
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + path.read_bytes() + (
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"collection\"\r\n\r\nOffline\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    status, answer = request("POST", f"{base}/api/v1/documents", token=token, body=body,
                             content_type=f"multipart/form-data; boundary={boundary}")
    return {"file": path.name, "upload_status": status, **answer}


def main(clone: Path, files: list[Path], question: str) -> dict:
    base = f"http://127.0.0.1:{PORT}"
    seen: dict = {"documents": [], "errors": []}
    log_path = clone / "launcher.log"
    log = log_path.open("w")
    launcher = subprocess.Popen([sys.executable, "-m", "ragsite.launcher"], cwd=clone, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: request("GET", f"{base}/healthz", timeout=5)[0] in (200, 503), 600,
                 "the web server", launcher)
        token = subprocess.run(
            [sys.executable, "manage.py", "create_api_token", "admin"], cwd=clone, capture_output=True,
            text=True, check=True,
        ).stdout.strip().splitlines()[-1]
        uploaded = [upload(base, token, path) for path in files]
        for item in uploaded:
            if item["upload_status"] != 202:
                seen["documents"].append(item)
                continue

            def finished(item=item):
                status, doc = request("GET", f"{base}/api/v1/documents/{item['id']}", token=token)
                return status == 200 and doc["status"] in ("ready", "failed") and doc

            seen["documents"].append({"file": item["file"], **wait_for(finished, 600, item["file"], launcher)})
        status, answer = request(
            "POST", f"{base}/v1/chat/completions", token=token, timeout=120,
            body=json.dumps({"model": "rag", "messages": [{"role": "user", "content": question}]}).encode(),
            content_type="application/json",
        )
        seen["chat_status"] = status
        seen["chat"] = answer
        seen["health"] = request("GET", f"{base}/healthz", timeout=10)[1]
    except Exception as error:  # reported to the test with the launcher's log, not raised past the cleanup
        seen["errors"].append(f"{type(error).__name__}: {error}")
    finally:
        launcher.send_signal(signal.SIGINT)
        try:
            seen["launcher_exit"] = launcher.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            seen["launcher_exit"] = "killed"
        log.close()
    seen["log_tail"] = log_path.read_text(errors="replace")[-6000:]
    return seen


if __name__ == "__main__":
    clone_dir, *paths, text = sys.argv[1:]
    print(json.dumps(main(Path(clone_dir), [Path(p) for p in paths], text)), flush=True)
