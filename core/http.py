"""What every view shares about HTTP: JSON or page, the error answers, ids from requests, site-wide headers.

One shape for the answers that are not a view's own: ``{"detail": message}`` for the APIs and scripts, the page
``<status>.html`` with the message for people (``error_response``). It serves the 413 of a body too large, the
429 of a rate limit (core.ratelimit.refused) and the 503 of an outage.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import psycopg
import redis
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.template.loader import render_to_string
from django.utils.cache import add_never_cache_headers
from django.utils.functional import SimpleLazyObject, empty
from django.views import defaults

from core.text import size_text

# Paths whose every answer is JSON: the two APIs and the health reports.
JSON_PREFIXES = ("/api/", "/v1/", "/healthz", "/readyz")


def json_expected(path: str, accept: str) -> bool:
    """JSON or page? JSON for the APIs' paths and for any client that asks for it (a page's script)."""
    return path.startswith(JSON_PREFIXES) or "application/json" in accept


def wants_json(request: HttpRequest) -> bool:
    return json_expected(request.path, request.headers.get("Accept", ""))


def error_response(status: int, message: str, *, json: bool, request: HttpRequest | None = None,
                   headers: dict[str, str] | None = None) -> HttpResponse:
    """``{"detail": message}`` with ``status``, or the page ``<status>.html`` showing ``message``.

    The page is rendered with ``request`` (its context processors read the session and the user) only when
    one is given: not during an outage (they would read the database that failed), not before a request
    exists (the ASGI body limit).
    """
    if json:
        return JsonResponse({"detail": message}, status=status, headers=headers)
    page = render_to_string(f"{status}.html", {"message": message}, request=request)
    return HttpResponse(page, status=status, headers=headers)


# Ids from URLs' queries, forms, JSON bodies and model names. Python's str.isdigit and regex ``\d`` accept every
# Unicode digit: "²" is a digit to them but ``int("²")`` raises, and ``int("٣")`` is 3, which would make
# ``rag-collection-٣`` an alias of collection 3.
ID = re.compile(r"[0-9]{1,19}")  # ASCII digits only; a bigint has at most 19
MAX_ID = 2**63 - 1  # PostgreSQL's bigint


def parse_id(value: object) -> int | None:
    """The id ``value`` spells in ASCII digits (``"42"`` → 42), or None for anything else.

    No sign, no spaces, no other digits: ``"²"``, ``"٣"``, ``"３"``, ``"-1"``, ``" 7"`` and ids past a
    bigint are not ids (they find nothing rather than fail).
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_ID else None
    if not ID.fullmatch(value):
        return None
    number = int(value)
    return number if number <= MAX_ID else None


# Django raises ``RequestDataTooBig`` where a form or JSON body past ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is first read
# (the CSRF check, a view, an API's parser) and answers it with a bare 400; ``bad_request`` (``handler400`` in
# ragsite.urls) and both APIs' exception handlers say instead what was too large and what the limit is.
def too_big_message() -> str:
    limit = size_text(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    return (f"The form fields or JSON body of the request are larger than the limit of {limit}. "
            "Upload documents as files, and keep questions shorter.")


def too_big_response(request: HttpRequest, exception: RequestDataTooBig | None = None) -> HttpResponse:
    return error_response(413, too_big_message(), json=wants_json(request), request=request)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if isinstance(exception, RequestDataTooBig):
        return too_big_response(request, exception)
    return defaults.bad_request(request, exception)


# A lost database (or Redis) is a clear 503, not a stack trace: Django's wrapped errors (connection refused, a
# server restarting, a connection a restart broke), psycopg's own (a COPY on a dead connection) and the pool's
# ``PoolTimeout`` (no connection within its timeout while the server is down), a psycopg ``OperationalError``.
DATABASE_ERRORS = (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
DATABASE_MESSAGE = "The database is not reachable right now. Please try again in a moment."
REDIS_MESSAGE = "The cache and task queue (Redis) are not reachable right now. Please try again in a moment."


def unavailable_response(request: HttpRequest, exception: Exception) -> HttpResponse | None:
    """The 503 for an outage of the database or Redis; None for any other exception."""
    if isinstance(exception, DATABASE_ERRORS):
        message = DATABASE_MESSAGE
    elif isinstance(exception, REDIS_ERRORS):
        message = REDIS_MESSAGE
    else:
        return None
    # Rendered without the request: its context processors would read the session and the user.
    return error_response(503, message, json=wants_json(request), headers={"Retry-After": "5"})


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        return unavailable_response(request, exception)


class NoStoreWhenSignedInMiddleware:
    """What a signed-in user is shown is kept by no browser cache or proxy: ``Cache-Control: no-store``.

    After signing out on a shared machine, the back button or a proxy must not show the documents,
    answers or API results of the one before. A response's content depends on who asks only if the
    request's user was looked up (pages, the API's bearer token); one that never asked (static files,
    health, an anonymous page with no session) is left alone, and no session is read just to decide.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if isinstance(user, SimpleLazyObject) and user._wrapped is empty:
            return response  # never looked up: nothing in the response depends on it
        if user is not None and user.is_authenticated:
            add_never_cache_headers(response)
        return response
