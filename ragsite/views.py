"""Site-wide views: liveness (/healthz) and readiness (/readyz)."""

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from chat.llm import active_llm_info
from documents.embeddings import active_backend_info


def health_report() -> dict:
    """Each real component, and what the product is really using.

    ``status``: ``error`` when this process cannot serve (its database or Redis is not reachable);
    ``degraded`` when it serves but the product is not doing its whole job (no worker answers, so no
    document is processed; the embedding model cannot load, or auto fell back to the hashing
    embeddings); ``ok`` otherwise. ``problems`` says why, in words.
    """
    report: dict = {"database": "ok", "pgvector": None, "redis": "ok", "workers": 0}
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
    from ragsite.services import redis_answers

    if not redis_answers(settings.REDIS_URL, timeout=0.5):
        report["redis"] = "error: not answering"
        failing = True
        problems.append("Redis is not reachable")
    else:
        from ragsite.celery import app

        try:
            replies = app.control.ping(timeout=1.0) or []
        except Exception:
            replies = []
        report["workers"] = len(replies)  # a stopped (SIGSTOP) or hung worker does not answer either
        if not replies:
            problems.append("no worker answers: uploaded documents are not processed")
    embeddings = active_backend_info()
    report["embeddings"] = embeddings
    if embeddings["error"]:
        problems.append(f"the embedding model cannot be loaded: {embeddings['error']}")
    elif embeddings["fallback"]:
        problems.append("no embedding model could be loaded: search uses the hashing fallback (shared words only)")
    try:
        report["language_model"] = active_llm_info()
    except Exception as error:
        report["language_model"] = f"error: {error}"
        problems.append("the language model is misconfigured")
    report["status"] = "error" if failing else "degraded" if problems else "ok"
    report["problems"] = problems
    return report


@require_GET
def healthz(request):
    """Liveness, for load balancers: 200 while this process can serve (its database and Redis answer).

    A degraded product (no worker, hashing fallback) still serves search and chat: the body says
    ``"status": "degraded"`` with the reasons, and the status code stays 200.
    """
    report = health_report()
    return JsonResponse(report, status=503 if report["status"] == "error" else 200)


@require_GET
def readyz(request):
    """Readiness, for deploy gates and monitoring: 200 only when everything works (``"status": "ok"``)."""
    report = health_report()
    return JsonResponse(report, status=200 if report["status"] == "ok" else 503)
