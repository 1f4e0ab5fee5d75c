"""Browser fixtures: Playwright's sync API driving the Debian ``chromium`` against ``live_server``.

No browser is downloaded: ``playwright install`` needs the internet, so the tests launch the
system Chromium (Debian package ``chromium``). Without it they skip, naming the package —
except in CI, where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.openai_server import openai_server  # noqa: F401  (the fixture, for slow_embeddings)

# Playwright's sync API runs an event loop in the test thread; Django then refuses ORM calls
# there ("You cannot call this from an async context"). The calls are synchronous and safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct horse battery"  # the password of the `user` and `other_user` fixtures


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.e2e)


def chromium_path() -> str | None:
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


# One browser per module, not per session: Playwright's sync API keeps an event loop running in the
# test thread while it is open, and a later non-browser test that drives Django's AsyncClient through
# async_to_sync would find it there and fail. Closing it after each module costs a second a module.
@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    if executable is None:
        message = "Chromium not found: install the Debian package `chromium` (apt-get install chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# Each thing the Content-Security-Policy blocks fires a `securitypolicyviolation` event in the page.
REPORT_CSP_VIOLATIONS = """document.addEventListener("securitypolicyviolation", (event) =>
  window.reportCspViolation(`${event.violatedDirective} blocked ${event.blockedURI || "inline"} `
                            + `on ${location.pathname} (${event.sourceFile}:${event.lineNumber})`));"""


@pytest.fixture
def csp_violations() -> list[str]:
    """What the Content-Security-Policy blocked on any page of the test (also a console error saying so)."""
    return []


@pytest.fixture
def page(browser, live_server, csp_violations):
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(error))  # an uncaught exception in the page's JavaScript
    page.expose_function("reportCspViolation", lambda text: csp_violations.append(text))
    page.add_init_script(REPORT_CSP_VIOLATIONS)
    page.on("console", lambda message: csp_violations.append(message.text)
            if "Content Security Policy" in message.text else None)
    yield page
    context.close()
    wait_for_quiet_database()
    assert not errors, f"JavaScript errors on the page: {errors}"
    assert not csp_violations, f"The Content-Security-Policy blocked: {csp_violations}"


# What another connection to the test database is doing, when it is inside a statement or a transaction.
BUSY_CONNECTIONS = """SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
      AND state IS DISTINCT FROM 'idle'"""


def wait_for_quiet_database(timeout: float = 60.0) -> None:
    """Wait until no other connection (a live-server thread still writing a streamed answer, a worker still storing a
    document) is inside a statement or a transaction: the flush that empties the database after a test would
    otherwise deadlock with it (seen in CI). Gives up after ``timeout`` seconds; the flush then reports what blocks."""
    from django.db import connection

    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(BUSY_CONNECTIONS)
            if cursor.fetchone()[0] == 0:
                return
            time.sleep(0.05)


def log_in(page, user, url: str = "/accounts/login/", password: str = PASSWORD):
    """Sign ``user`` in on ``page`` through the real login form (``url``: relative to the context's base URL, or
    whole); the page ends on the documents list."""
    from playwright.sync_api import expect

    page.goto(url)
    page.get_by_label("Username").fill(user.get_username())
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    # Attached, not visible: on a phone the site menu (and its sign-out button) is folded.
    sign_out = page.get_by_role("button", name=f"Sign out ({user.get_username()})", include_hidden=True)
    expect(sign_out).to_be_attached()
    return page


@pytest.fixture
def sign_in(page, live_server):
    """Sign a user in through the real login form; the page ends on the documents list."""

    def sign_in(user, password: str = PASSWORD):
        return log_in(page, user, live_server.url + "/accounts/login/", password)

    return sign_in


@pytest.fixture
def slow_embeddings(settings, monkeypatch, openai_server):  # noqa: F811  (tests.openai_server's fixture)
    """Embed through the loopback OpenAI server (tests.openai_server), one chunk per call answered after 0.5 s (40
    calls), the progress written at every step: a run lasts long enough to be watched."""
    from documents import pipeline

    settings.EMBEDDING_BACKEND, settings.EMBEDDING_MODEL = "openai", "text-embedding-3-small"
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = openai_server.url, "test-key"
    settings.EMBEDDING_BATCH_SIZE = 1
    openai_server.delay(0.5, times=40)
    monkeypatch.setattr(pipeline, "PROGRESS_WRITE_SECONDS", 0.0)
    return openai_server


def travel_pages(count: int) -> list[str]:
    """The text of ``count`` PDF pages of a travel policy, 40 rules each (tests.documents_factory.make_pdf)."""
    return [
        " ".join(f"Page {n} rule {i}: trains are booked for trips under {i + 3} hours." for i in range(40))
        for n in range(count)
    ]


@pytest.fixture
def signed_in_page(sign_in, user):
    """The page, signed in as ``user`` (alice)."""
    return sign_in(user)
