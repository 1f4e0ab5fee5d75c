"""Site-wide views: the health check."""

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET


@require_GET
def healthz(request):
    """Liveness of each real component, for load balancers and humans (no login)."""
    report: dict = {"database": "ok", "pgvector": None, "redis": "ok", "workers": 0}
    healthy = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            row = cursor.fetchone()
            report["pgvector"] = row[0] if row else None
            healthy &= row is not None
    except Exception as error:  # any failure is the answer here, not a crash
        report["database"] = f"error: {error.__class__.__name__}"
        healthy = False
    from ragsite.services import redis_answers

    if not redis_answers(settings.REDIS_URL, timeout=0.5):
        report["redis"] = "error: not answering"
        healthy = False
    else:
        from ragsite.celery import app

        try:
            replies = app.control.ping(timeout=0.5) or []
        except Exception:
            replies = []
        report["workers"] = len(replies)
    report["status"] = "ok" if healthy else "error"
    return JsonResponse(report, status=200 if healthy else 503)
