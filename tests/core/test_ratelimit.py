"""core/ratelimit.py: fixed windows per user and action, counted in the real Redis cache."""

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from core import ratelimit
from tests.conftest import start_of_a_rate_window

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def limits(settings):
    settings.RATE_LIMITS = {"chat": "3/m", "upload": ""}
    start_of_a_rate_window(margin=2.0)  # the four tries in one window


def test_the_limit_allows_count_then_refuses_with_the_seconds_to_wait(user, other_user):
    results = [ratelimit.hit("chat", user) for _ in range(4)]
    assert [allowed for allowed, _ in results] == [True, True, True, False]
    assert 0 < results[-1][1] <= 60
    assert ratelimit.hit("chat", other_user)[0]  # counted per user
    text = ratelimit.message("chat", results[-1][1])
    assert text.startswith("Too many questions: the limit is 3 per minute. Try again in ")


def test_an_empty_limit_is_off_and_a_bad_one_is_refused(user, settings):
    assert all(ratelimit.hit("upload", user)[0] for _ in range(50))
    settings.RATE_LIMITS = {"chat": "lots"}
    with pytest.raises(ImproperlyConfigured, match="20/m"):
        ratelimit.hit("chat", user)


def test_a_window_of_several_units_and_counting_by_any_key(settings):
    assert ratelimit.parse("10/15m") == (10, 900) and ratelimit.parse("5/2h") == (5, 7200)
    for bad in ("10/0m", "10/15", "²/m", "10/15x"):
        with pytest.raises(ImproperlyConfigured):
            ratelimit.parse(bad)
    settings.RATE_LIMITS = {"login_ip": "2/15m"}
    usages = [ratelimit.count("login_ip", "192.0.2.1") for _ in range(3)]
    assert [u.allowed for u in usages] == [True, True, False] and [u.used for u in usages] == [1, 2, 3]
    assert 0 < usages[-1].retry_after <= 900
    ratelimit.uncount("login_ip", "192.0.2.1")
    assert ratelimit.count("login_ip", "192.0.2.1").used == 3
    assert ratelimit.count("login_ip", "192.0.2.2").allowed  # counted per key
    text = ratelimit.message("login_ip", 840)
    assert text == "Too many failed sign-ins from your address: the limit is 2 per 15 minutes. Try again in 14 minutes."


def test_requests_share_one_pool_of_redis_connections(user):
    """Each ASGI request runs in a context of its own, where Django makes a cache object of its own: all of them take
    the process's one pool (core.cache), so a request does not open a Redis connection to count its rate limit."""
    import asyncio
    import contextvars

    from asgiref.sync import ThreadSensitiveContext, sync_to_async
    from django.core.cache import caches

    def counted() -> object:
        ratelimit.hit("chat", user)
        cache: Any = caches["default"]  # Django's RedisCache: its client's pool
        return cache._cache.get_client(write=True).connection_pool

    async def request() -> object:  # as core.asgi runs a request: a context and a thread of its own
        async with ThreadSensitiveContext():
            return await sync_to_async(counted)()

    async def requests() -> list[object]:
        return [await asyncio.ensure_future(request()) for _ in range(3)]

    # A server's connection task has made no cache object: neither has an empty context, unlike this test's.
    pools = contextvars.Context().run(asyncio.run, requests())
    assert len({id(pool) for pool in pools}) == 1
    assert len(pools[0]._available_connections) + len(pools[0]._in_use_connections) == 1


def test_a_count_is_one_round_trip_to_redis_and_its_window_expires(user, monkeypatch):
    """INCR and EXPIRE NX sent together: Django's add() and incr() took three round trips."""
    import redis
    from django.core.cache import cache

    sent = []
    original = redis.connection.AbstractConnection.send_packed_command

    def recorded(self, command, check_health=True):
        sent.append(command)
        return original(self, command, check_health)

    ratelimit.hit("chat", user)  # the pool's connection made (its handshake is not the count's)
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", recorded)
    allowed, retry_after = ratelimit.hit("chat", user)
    monkeypatch.undo()
    assert allowed and len(sent) == 1
    window = ratelimit._window("chat", f"user:{user.pk}")
    assert window is not None
    key = cache.make_and_validate_key(window[1])
    client = cache._cache.get_client(key)
    assert client.get(key) == b"2" and 0 < client.ttl(key) <= retry_after + 1
    assert cache.get(window[1]) == 2  # as Django's cache reads it (uncount's decr too)
