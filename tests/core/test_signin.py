"""Sign-in throttling (ragsite/signin.py) on both sign-in pages: failures counted per account and per client
address; beyond either limit a 429 page says when to retry, even to the right password; an audit event."""

import re
import time

import pytest

from audit.models import AuditEvent

pytestmark = pytest.mark.django_db

LOGIN_URLS = ["/accounts/login/", "/admin/login/"]
PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def limits(settings):
    """Small limits, and counters of this test only (a cache key prefix of its own)."""
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login_account": "3/15m", "login_ip": "100/15m"}
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"signin-{time.time_ns()}"}}


@pytest.fixture
def staff(django_user_model):
    """Both pages accept this account (the admin's only staff)."""
    return django_user_model.objects.create_user("alice", "alice@example.com", PASSWORD, is_staff=True)


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.com", PASSWORD, is_staff=True)


def sign_in(client, url, username, password, address="198.51.100.1"):
    response = client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)
    if response.status_code == 302:
        client.logout()
    return response


def assert_throttled(response, what: str):
    assert response.status_code == 429
    seconds = int(response["Retry-After"])
    assert 1 <= seconds <= 900
    text = response.content.decode()
    assert re.search(rf"Too many failed sign-ins {what}: the limit is \d+ per 15 minutes\. Try again in \d+ "
                     r"(seconds|minutes)\.", text), text


@pytest.mark.parametrize("url", LOGIN_URLS)
def test_failures_per_account_are_limited_then_even_the_right_password_waits(client, url, staff, bob):
    assert [sign_in(client, url, "alice", "wrong").status_code for _ in range(3)] == [200, 200, 200]

    assert_throttled(sign_in(client, url, "alice", PASSWORD), "for this account")
    assert_throttled(sign_in(client, url, " ALICE", PASSWORD, address="203.0.113.9"), "for this account")
    assert "_auth_user_id" not in client.session
    # Another account from the same address is not affected.
    assert sign_in(client, url, "bob", PASSWORD).status_code == 302
    # One audit event for the refusals of this window, with the account and the address.
    event = AuditEvent.objects.get(action=AuditEvent.Action.SIGN_IN_THROTTLED)
    assert event.object_repr == "alice" and event.ip == "198.51.100.1" and event.detail["limit"] == "login_account"


@pytest.mark.parametrize("url", LOGIN_URLS)
def test_failures_per_address_are_limited_whatever_the_account(client, url, settings, staff, bob):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login_account": "100/15m", "login_ip": "4/15m"}
    for name in ("carol", "dave", "erin", "frank"):  # one guess each at many accounts
        assert sign_in(client, url, name, "wrong").status_code == 200

    assert_throttled(sign_in(client, url, "alice", PASSWORD), "from your address")
    # Counted per address: another client signs in; an IPv6 client's /64 is one address.
    assert sign_in(client, url, "alice", PASSWORD, address="203.0.113.9").status_code == 302
    for suffix in ("1", "2", "3", "4"):
        sign_in(client, url, "nobody", "wrong", address=f"2001:db8:1:2::{suffix}")
    assert_throttled(sign_in(client, url, "bob", PASSWORD, address="2001:db8:1:2:ffff::5"), "from your address")
    assert sign_in(client, url, "bob", PASSWORD, address="2001:db8:1:3::1").status_code == 302


@pytest.mark.parametrize("url", LOGIN_URLS)
def test_successful_sign_ins_do_not_count(client, url, staff):
    assert [sign_in(client, url, "alice", PASSWORD).status_code for _ in range(6)] == [302] * 6
    assert [sign_in(client, url, "alice", "wrong").status_code for _ in range(3)] == [200, 200, 200]
    assert sign_in(client, url, "alice", PASSWORD).status_code == 429


def test_the_issue_scenario_sixty_wrong_passwords_at_two_accounts_with_the_default_limits(client, settings,
                                                                                            staff, bob):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login_account": "10/15m", "login_ip": "50/15m"}
    codes = [sign_in(client, url, name, "wrong").status_code
             for _ in range(15) for url in LOGIN_URLS for name in ("alice", "bob")]
    assert codes.count(200) == 20 and codes.count(429) == 40  # ten failures per account, then refused
    for name in ("alice", "bob"):
        for url in LOGIN_URLS:
            assert sign_in(client, url, name, PASSWORD).status_code == 429


def test_a_get_of_the_sign_in_page_is_never_refused(client, staff):
    for _ in range(4):
        sign_in(client, "/accounts/login/", "alice", "wrong")
    assert client.get("/accounts/login/").status_code == 200
    assert client.get("/admin/login/").status_code == 200
