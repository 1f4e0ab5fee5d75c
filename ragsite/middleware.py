"""Turn a lost database (or Redis) into a clear 503 instead of a stack trace.

Covers Django's wrapped errors (``OperationalError``, ``InterfaceError``: connection refused, server
restarting, a connection a restart broke), psycopg's own (a COPY on a dead connection) and the
connection pool's ``PoolTimeout`` (no connection within the pool's timeout while the server is down),
which is a psycopg ``OperationalError``. The JSON APIs answer ``{"detail": ...}``; pages render 503.html.
"""

from __future__ import annotations

import psycopg
import redis
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string

DATABASE_ERRORS = (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
DATABASE_MESSAGE = "The database is not reachable right now. Please try again in a moment."
REDIS_MESSAGE = "The cache and task queue (Redis) are not reachable right now. Please try again in a moment."
JSON_PREFIXES = ("/api/", "/v1/", "/healthz")


def unavailable_response(request, exception) -> HttpResponse | None:
    """The 503 for an outage of the database or Redis; None for any other exception."""
    if isinstance(exception, DATABASE_ERRORS):
        message = DATABASE_MESSAGE
    elif isinstance(exception, REDIS_ERRORS):
        message = REDIS_MESSAGE
    else:
        return None
    headers = {"Retry-After": "5"}
    if request.path.startswith(JSON_PREFIXES) or "application/json" in request.headers.get("Accept", ""):
        return JsonResponse({"detail": message}, status=503, headers=headers)
    # Rendered without the request: its context processors would read the session and the user,
    # i.e. the database that just failed.
    return HttpResponse(render_to_string("503.html", {"message": message}), status=503, headers=headers)


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        return unavailable_response(request, exception)


class SyncMiddlewareASGIHandler(ASGIHandler):
    """Django's ASGI handler, running the middleware and the view in one hop to a thread.

    Django's own handler runs the middleware chain in async mode: every middleware that can only be
    sync (WhiteNoise's, these, ...) and every sync view is wrapped in its own thread hop, and the
    request goes back and forth between the event loop and its thread four times before the response
    (about 0.8 ms per request, measured in bench/search.py's (c0)). Every view here is sync and the
    middleware is too, so this handler runs the whole chain as WSGI would, in the request's thread
    (thread-sensitive, as Django runs sync code under ASGI), and only the reading of the body and
    the sending of the response (streamed answers included, as async iterators) stay on the loop.

    Making the middleware async-capable instead costs more: Django's own (MiddlewareMixin) middleware
    then runs in async mode, with a thread hop for each of its process_request/process_response.
    """

    def __init__(self):
        BaseHandler.__init__(self)  # not ASGIHandler's: that one loads the middleware in async mode
        self.load_middleware(is_async=False)

    async def get_response_async(self, request):
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)
