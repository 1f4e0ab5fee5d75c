"""Liveness (/healthz) and readiness (/readyz): each real component, and what the product really uses.

The database, Redis and the workers are checked here; the apps add their own components (the embedding
model, the language model) with ``register`` in their AppConfig.ready, so this module imports no app.

/healthz and /readyz answer whatever the Host header and the scheme. Probes call them by address over plain
HTTP: docker compose's web healthcheck asks ``http://127.0.0.1:8000/healthz`` inside the container, load
balancers ask the container's IP. Through the normal middleware such a request is refused with 400 when
``ALLOWED_HOSTS`` names the real domain (``CommonMiddleware`` validates the Host) and redirected to HTTPS when
``SECURE_SSL_REDIRECT`` is on (``SecurityMiddleware``), so a healthy site would look dead. Host validation
protects the absolute URLs a response builds from the Host; the health report builds none and says nothing a
public page would not, so ``HealthCheckMiddleware``, first in the chain, answers it before either check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from celery import current_app
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase
from django.views.decorators.http import require_GET

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"

# name -> a check returning (what the report shows under that name, problems in words)
Check = Callable[[], tuple[object, list[str]]]
COMPONENTS: dict[str, Check] = {}


def register(name: str, check: Check) -> None:
    """Add ``name`` to the report: a component that degrades the product when it has problems."""
    COMPONENTS[name] = check


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """True when a Redis server answers PING at ``url``."""
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=timeout).ping())
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        return False


def workers_on_our_queues(timeout: float = 1.0) -> int:
    """How many Celery workers answer and consume a queue this app sends tasks to.

    A bare ``ping`` counts every worker on the broker: another installation's, or another test run's,
    sharing the same Redis would make a product with no worker of its own look healthy.
    """
    conf = current_app.conf
    ours = {conf.task_default_queue} | {getattr(queue, "name", queue) for queue in conf.task_queues or ()}
    replies = current_app.control.inspect(timeout=timeout).active_queues() or {}
    return sum(1 for queues in replies.values() if any(queue.get("name") in ours for queue in queues or ()))


def health_report() -> dict[str, Any]:
    """Each real component, and what the product is really using.

    ``status``: ``error`` when this process cannot serve (its database or Redis is not reachable);
    ``degraded`` when it serves but the product is not doing its whole job (no worker answers, so no
    document is processed; the embedding model cannot load, or auto fell back to the hashing
    embeddings); ``ok`` otherwise. ``problems`` says why, in words.
    """
    report: dict[str, Any] = {"database": "ok", "pgvector": None, "redis": "ok", "workers": 0}
    problems: list[str] = []
    failing = False
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            row = cursor.fetchone()
            report["pgvector"] = row[0] if row else None
            if row is None:
                failing = True
                problems.append("the pgvector extension is not installed in the database")
    except Exception as error:  # any failure is the answer here, not a crash
        report["database"] = f"error: {error.__class__.__name__}"
        failing = True
        problems.append("the database is not reachable")
    if not redis_answers(settings.REDIS_URL, timeout=0.5):
        report["redis"] = "error: not answering"
        failing = True
        problems.append("Redis is not reachable")
    else:
        try:
            workers = workers_on_our_queues(timeout=1.0)
        except Exception:
            workers = 0
        report["workers"] = workers  # a stopped (SIGSTOP) or hung worker does not answer either
        if not workers:
            problems.append("no worker answers: uploaded documents are not processed")
    for name, check in COMPONENTS.items():
        report[name], found = check()
        problems.extend(found)
    report["status"] = "error" if failing else "degraded" if problems else "ok"
    report["problems"] = problems
    return report


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness, for load balancers: 200 while this process can serve (its database and Redis answer).

    A degraded product (no worker, hashing fallback) still serves search and chat: the body says
    ``"status": "degraded"`` with the reasons, and the status code stays 200.
    """
    report = health_report()
    return JsonResponse(report, status=503 if report["status"] == "error" else 200)


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness, for deploy gates and monitoring: 200 only when everything works (``"status": "ok"``)."""
    report = health_report()
    return JsonResponse(report, status=200 if report["status"] == "ok" else 503)


class HealthCheckMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.path_info == HEALTH_PATH:
            return healthz(request)
        if request.path_info == READY_PATH:
            return readyz(request)
        return self.get_response(request)
