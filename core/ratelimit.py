"""Rate limits, counted in the cache (Redis): a fixed window per action and user (or any key).

    allowed, retry_after = ratelimit.hit("chat", user)
    usage = ratelimit.count("login_ip", address)  # any key; uncount() takes one back

Limits come from settings as "COUNT/PERIOD" (PERIOD: s, m, h, d, optionally with a number: "20/m",
"10/15m"); an empty limit turns the check off. Every refusal is answered by ``refused``: 429, the
message saying the limit and when to try again, and ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import NamedTuple

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse

from core.http import error_response, wants_json

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
UNITS = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
PERIOD = re.compile(r"(?P<times>[0-9]*)(?P<unit>[smhd])[a-z]*")


def parse(rate: str) -> tuple[int, int] | None:
    """``"10/15m"`` -> (10, 900): the count and the window in seconds; None for no limit."""
    if not rate:
        return None
    count, _, period = rate.partition("/")
    match = PERIOD.fullmatch(period.strip().lower())
    if not re.fullmatch(r"[0-9]+", count.strip()) or not match or int(match["times"] or 1) == 0:
        raise ImproperlyConfigured(f"A rate limit looks like '20/m' or '10/15m' (per s, m, h or d), not {rate!r}.")
    return int(count), int(match["times"] or 1) * PERIODS[match["unit"]]


def limit_for(action: str) -> tuple[int, int] | None:
    return parse(settings.RATE_LIMITS.get(action, ""))


def _window(action: str, key: str) -> tuple[int, str, int] | None:
    """(the limit's count, the cache key of the current window, seconds until it ends); None: no limit."""
    limit = limit_for(action)
    if limit is None:
        return None
    count, window = limit
    now = int(time.time())
    start = now - now % window
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]  # any text, a short safe key
    return count, f"ratelimit:{action}:{digest}:{start}", start + window - now


class Usage(NamedTuple):
    allowed: bool
    retry_after: int  # seconds until the window ends
    used: int  # counted in this window, this one included (0: no limit)
    limit: int


def count(action: str, key: str) -> Usage:
    """Count one ``action`` under ``key`` (atomically: parallel requests cannot all slip under the limit).

    One round trip to Redis: INCR, which makes the window's counter at 1 if it is not there, and EXPIRE ... NX, which
    gives a new counter its end and leaves a running one's alone (Redis 7). Django's cache API took three (SET NX,
    then EXISTS and INCRBY for ``incr``), and the rate limit was a third of the chat view's own time before the first
    token (py-spy over bench/chat_stream.py).
    """
    current = _window(action, key)
    if current is None:
        return Usage(True, 0, 0, 0)
    limit, cache_key, retry_after = current
    redis_key = cache.make_and_validate_key(cache_key)
    # Django's Redis cache client (a semi-private attribute): its pool (core.cache), and its keys and integer values
    # as cache.get() and cache.decr() read them.
    client = cache._cache.get_client(redis_key, write=True)  # type: ignore[attr-defined]
    used, _ = client.pipeline(transaction=False).incr(redis_key).expire(redis_key, retry_after + 1, nx=True).execute()
    return Usage(used <= limit, retry_after, used, limit)


def uncount(action: str, key: str) -> None:
    """Take back one ``action`` counted under ``key`` in the current window (it turned out not to count)."""
    current = _window(action, key)
    if current is not None:
        try:
            cache.decr(current[1])
        except ValueError:  # the window ended meanwhile: nothing to take back
            pass


def hit(action: str, user: AbstractBaseUser | AnonymousUser) -> tuple[bool, int]:
    """Count one ``action`` by ``user``; (allowed, seconds until the window resets)."""
    if not getattr(user, "is_authenticated", False):
        return True, 0
    usage = count(action, f"user:{user.pk}")
    return usage.allowed, usage.retry_after


def refused(request: HttpRequest, action: str, retry_after: int, *,
            response: HttpResponse | None = None) -> HttpResponse:
    """The 429 of ``action``'s limit, to try again in ``retry_after`` seconds.

    ``{"detail": message}`` or the 429 page (core.http.error_response), unless the caller answers in a shape of
    its own (``response``: OpenAI's error, the chat page's plain text, the admin's form shown again, a batch of
    uploads' results), which is given the status and the header.
    """
    if response is None:
        response = error_response(429, message(action, retry_after), json=wants_json(request), request=request)
    response.status_code = 429
    return with_retry_after(response, retry_after)


def with_retry_after(response: HttpResponse, retry_after: int) -> HttpResponse:
    """``Retry-After``: the seconds until the limit's window ends (clients, OpenAI's among them, wait that long)."""
    response["Retry-After"] = str(retry_after)
    return response


def message(action: str, retry_after: int) -> str:
    found = limit_for(action)
    if found is None:  # only an action that has a limit is ever refused
        raise ValueError(f"No rate limit is set for {action!r}.")
    limit, window = found
    what = {"chat": "questions", "upload": "uploads", "share": "attempts to add members",
            "login_account": "failed sign-ins for this account",
            "login_ip": "failed sign-ins from your address"}.get(action, "requests")
    return f"Too many {what}: the limit is {limit} per {duration(window, exact=True)}. Try again in " \
           f"{duration(retry_after)}."


def duration(seconds: int, *, exact: bool = False) -> str:
    """``60`` -> "minute" (exact, one unit), ``900`` -> "15 minutes"; a wait over two minutes in whole minutes."""
    if exact:
        for size, unit in sorted(UNITS.items(), reverse=True):
            if seconds % size == 0:
                times = seconds // size
                return unit if times == 1 else f"{times} {unit}s"
    if seconds > 120:
        return f"{-(-seconds // 60)} minutes"
    return f"{seconds} seconds"
