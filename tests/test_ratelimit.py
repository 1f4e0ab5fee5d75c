"""ragsite/ratelimit.py: fixed windows per user and action, counted in the real Redis cache."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from ragsite import ratelimit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def limits(settings):
    settings.RATE_LIMITS = {"chat": "3/m", "upload": ""}


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
