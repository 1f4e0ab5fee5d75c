"""One pool of Redis connections per process for Django's Redis cache (settings.CACHES's ``pool_class``).

Django keeps its cache objects per context (``django.core.cache.caches`` is an asgiref ``Local``), and under ASGI
every request runs in a context of its own: each request made a cache object of its own, with a pool of its own,
and so a new connection to Redis for the rate limit of a chat question or an upload, closed again when the object
was collected (py-spy over POST /v1/chat/completions: a quarter of the request's own time was connecting to Redis).
``from_url`` (what Django's ``RedisCacheClient`` calls for its pool) hands every cache object of the process the same
pool for the same server and options. redis-py's pools are thread-safe, and start afresh in a forked child (Celery's
prefork workers).
"""

from __future__ import annotations

import threading
from typing import Any

import redis


class SharedConnectionPool(redis.ConnectionPool):
    _pools: dict[tuple[str, str], redis.ConnectionPool] = {}
    _pools_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> redis.ConnectionPool:  # type: ignore[override]
        key = (url, repr(sorted(kwargs.items())))
        with cls._pools_lock:
            if key not in cls._pools:
                cls._pools[key] = redis.ConnectionPool.from_url(url, **kwargs)
            return cls._pools[key]
