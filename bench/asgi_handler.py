"""Django's stock ASGI handler (+ the body-limit middleware) against the former hand-written one, at equal settings.

Both applications (bench/_asgi_apps.py) are served at the same time by two uvicorn processes started
alike (httptools + uvloop, one process, DATABASE_POOL=true, the same DEBUG), on the same database, the
same token and the same document; the requests alternate between them, so load from anything else on the
machine falls on both. Measured per application:
  - GET /api/v1/documents/{id} with a bearer token (the smallest authenticated API read), one at a time:
    p50 / p95 latency;
  - POST /api/v1/documents, a small text file (a new one each time), one at a time: p50 / p95;
  - the same GET from 16 concurrent clients for a few seconds, in alternating slices: requests/s.
Both must answer 413 to an upload declaring more than the limit, before reading it (checked first).

    .venv/bin/python bench/asgi_handler.py            # recorded in bench/BENCHMARKS.md
    .venv/bin/python bench/asgi_handler.py --quick    # a smoke run, not recorded
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from http.client import HTTPConnection
from pathlib import Path

import _common
import httpx

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")  # tasks go where no worker listens
APPS = ("stock", "custom")


def _serve(app: str, env: dict, folder: Path) -> tuple[subprocess.Popen, str]:
    server, port = _common.serve_uvicorn(
        f"_asgi_apps:{app}", folder / f"uvicorn-{app}.log", env,
        extra=("--http", "httptools", "--loop", "uvloop", "--log-level", "warning"),
    )
    return server, f"http://127.0.0.1:{port}"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _throughput(base: str, path: str, headers: dict, seconds: float, clients: int = 16) -> int:
    """Requests answered in ``seconds`` by ``clients`` concurrent keep-alive clients (made before the clock starts)."""
    done = [0] * clients
    failures: list[str] = []
    sessions = [httpx.Client(base_url=base, headers=headers, timeout=30) for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    stop = [0.0]

    def client(index: int) -> None:
        http = sessions[index]
        start.wait()
        while time.monotonic() < stop[0]:
            answer = http.get(path)
            if answer.status_code != 200:
                failures.append(f"{answer.status_code}: {answer.text[:200]}")
                return
            done[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    stop[0] = time.monotonic() + seconds
    start.wait()
    for thread in threads:
        thread.join()
    for http in sessions:
        http.close()
    if failures:
        raise RuntimeError(f"{len(failures)} clients failed, the first with {failures[0]}")
    return sum(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few requests, not recorded")
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=5.0, help="per slice of the concurrent phase")
    parser.add_argument("--debug", default="false", help="DEBUG for both servers")
    args = parser.parse_args()
    rounds, seconds, slices = (20, 1.0, 2) if args.quick else (args.rounds, args.seconds, 6)

    secret = "bench-" + "k" * 50
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    _common.setup_django("bench_asgi_handler", REDIS_URL=REDIS_URL, DEBUG=args.debug, SECRET_KEY=secret)
    from django.contrib.auth import get_user_model
    from django.core.files.base import ContentFile

    from core.models import ApiToken
    from documents import services
    from documents.models import Document

    user, _ = get_user_model().objects.get_or_create(username="asgi-bench")
    token = ApiToken.issue(user=user, name="asgi bench")[1]
    document = Document.objects.filter(owner=user).first() or services.document_create(
        owner=user, file=ContentFile(b"A small document.", name="small.txt"),
        collection=services.collection_for_upload(user=user, name=None), filename="small.txt")
    headers = {"Authorization": f"Bearer {token}"}
    folder = Path(tempfile.mkdtemp(prefix="bench-asgi-"))
    env = {**os.environ, "DATABASE_POOL": "true", "DEBUG": args.debug, "SECRET_KEY": secret,
           "ALLOWED_HOSTS": "127.0.0.1", "RATE_LIMIT_UPLOAD": "", "EMBEDDING_BACKEND": "hashing",
           "MEDIA_ROOT": str(folder / "media"), "LOG_LEVEL": "WARNING"}
    servers = {app: _serve(app, env, folder) for app in APPS}
    try:
        clients = {app: httpx.Client(base_url=base, headers=headers, timeout=30) for app, (_, base) in servers.items()}
        for app, (_, base) in servers.items():  # the behaviour both must keep: refused before the body is sent
            raw = HTTPConnection(base.removeprefix("http://"), timeout=30)
            raw.request("POST", "/api/v1/documents", body=b"", headers={
                **headers, "Content-Type": "multipart/form-data; boundary=x", "Content-Length": str(10**10)})
            refused = raw.getresponse()
            assert refused.status == 413 and b"larger than the limit" in refused.read(), (app, refused.status)
            raw.close()
        get_ms: dict[str, list[float]] = {app: [] for app in APPS}
        post_ms: dict[str, list[float]] = {app: [] for app in APPS}
        for n in range(rounds + 20):
            order = APPS if n % 2 == 0 else APPS[::-1]
            for app in order:
                http = clients[app]
                started = time.perf_counter()
                assert http.get(f"/api/v1/documents/{document.pk}").status_code == 200
                elapsed = (time.perf_counter() - started) * 1000
                upload = {"file": (f"{app}-{n}-{time.time_ns()}.txt", f"note {app} {n} {time.time_ns()}".encode(),
                                   "text/plain")}
                started = time.perf_counter()
                answer = http.post("/api/v1/documents", files=upload)
                posted = (time.perf_counter() - started) * 1000
                assert answer.status_code == 202, answer.text
                if n >= 20:  # warm-up excluded
                    get_ms[app].append(elapsed)
                    post_ms[app].append(posted)
        served = {app: 0 for app in APPS}
        for n in range(slices):
            for app in APPS if n % 2 == 0 else APPS[::-1]:
                served[app] += _throughput(servers[app][1], f"/api/v1/documents/{document.pk}", headers, seconds)
        for http in clients.values():
            http.close()
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=30)
        import redis

        redis.Redis.from_url(REDIS_URL).delete("celery")
        Document.objects.filter(owner=user).exclude(pk=document.pk).delete()

    label = {"stock": "stock: get_asgi_application() + core.uploads.BodyLimitMiddleware",
             "custom": "one hop: core.asgi.OneHopASGIHandler + the same (the product's)"}
    rows = [["handler", "GET p50 ms", "GET p95 ms", "upload p50 ms", "upload p95 ms", "GET req/s (16 clients)"]]
    for app in APPS:
        rows.append([label[app], f"{statistics.median(get_ms[app]):.2f}", f"{_percentile(get_ms[app], 0.95):.2f}",
                     f"{statistics.median(post_ms[app]):.2f}", f"{_percentile(post_ms[app], 0.95):.2f}",
                     f"{served[app] / (seconds * slices):.0f}"])
    for row in rows:
        print(" | ".join(row))
    if args.quick:
        return
    load = os.getloadavg()[0]
    _common.record(
        "ASGI handler: Django's stock one vs. the former hand-written one (bench/asgi_handler.py)",
        f"both served at once by uvicorn (one process each, --http httptools --loop uvloop, no access log), "
        f"DEBUG={args.debug}, DATABASE_POOL=true (max 20), the same database, token and document; EMBEDDING_BACKEND="
        f"hashing, RATE_LIMIT_UPLOAD off. {rounds} alternating rounds (after 20 warm-up), one request at a time: "
        f"a GET /api/v1/documents/{{id}} and a POST /api/v1/documents of a small new text file each; then "
        f"{slices} alternating pairs of {seconds:g}-second slices of 16 concurrent clients GETting (req/s over "
        f"an application's {slices} slices). Load average at the end: {load:.1f} (2 cores shared).",
        rows,
    )


if __name__ == "__main__":
    main()
