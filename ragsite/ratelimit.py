"""Per-user rate limits, counted in the cache (Redis): a fixed window per user and action.

    allowed, retry_after = ratelimit.hit("chat", user)

Limits come from settings as "COUNT/PERIOD" (PERIOD: s, m, h, d; e.g. "20/m"); an empty limit
turns the check off. Views answer 429 with ``message(...)`` and a Retry-After header.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse(rate: str) -> tuple[int, int] | None:
    if not rate:
        return None
    try:
        count, period = rate.split("/")
        return int(count), PERIODS[period.strip().lower()[:1]]
    except (ValueError, KeyError) as error:
        raise ImproperlyConfigured(f"A rate limit looks like '20/m' (per s, m, h or d), not {rate!r}.") from error


def limit_for(action: str) -> tuple[int, int] | None:
    return parse(settings.RATE_LIMITS.get(action, ""))


def hit(action: str, user) -> tuple[bool, int]:
    """Count one ``action`` by ``user``; (allowed, seconds until the window resets)."""
    limit = limit_for(action)
    if limit is None or not getattr(user, "is_authenticated", False):
        return True, 0
    count, window = limit
    now = int(time.time())
    start = now - now % window
    key = f"ratelimit:{action}:{user.pk}:{start}"
    cache.add(key, 0, timeout=window + 1)
    try:
        used = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window + 1)
        used = 1
    return used <= count, start + window - now


def message(action: str, retry_after: int) -> str:
    count, window = limit_for(action)
    unit = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}.get(window, f"{window} seconds")
    what = {"chat": "questions", "upload": "uploads"}.get(action, "requests")
    return f"Too many {what}: the limit is {count} per {unit}. Try again in {retry_after} seconds."
