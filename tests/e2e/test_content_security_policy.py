"""Every page under the Content-Security-Policy in a real browser: it works, and nothing is blocked.

The browser reports each thing the policy blocks as a `securitypolicyviolation` event and a console
error; the `page` fixture collects both across navigations, for every browser test, and fails the test on
any. The API docs must also render with no network but the site's (Swagger UI from our static files).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from playwright.sync_api import expect

from chat.models import Conversation
from documents import pipeline, services
from documents.models import Document
from tests.e2e.chat_page import wait_until_saved

ANSWER = ("Your session may have expired: [sign in again](https://evil.example/login) to read the "
          "policy. Employees book trains for trips under four hours [1].")


@pytest.fixture
def admin_user(user):
    user.is_staff = user.is_superuser = True
    user.save()
    return user


@pytest.fixture
def llm(llm):
    llm.reply_text = ANSWER
    llm.stream_delay = 0.02
    return llm


def add_document(owner, collection, name: str, body: bytes) -> Document:
    document = services.document_create(owner=owner, collection=collection, file=SimpleUploadedFile(name, body),
                                      enqueue=False)
    ingested = pipeline.document_ingest(document_id=document.pk)
    assert ingested is not None
    return ingested


def test_every_page_works_under_the_policy_with_nothing_blocked(csp_violations, sign_in, admin_user, collection,
                                                                 llm, live_server):
    long_text = "\n\n".join(f"Section {n}. " + "Trains are booked for trips under four hours. " * 40
                            for n in range(12))
    policy = add_document(admin_user, collection, "travel-policy.txt", long_text.encode())
    spare = add_document(admin_user, collection, "spare.txt", b"A document to delete from the list.")
    page = sign_in(admin_user)  # the sign-in page, then the documents list

    # Documents: the list's script runs (live status), and a delete asks first (no inline onsubmit).
    rows = page.locator("#documents-table tr[data-document-id]")
    expect(rows).to_have_count(2)
    spare_row = page.locator(f'tr[data-document-id="{spare.pk}"]')
    page.once("dialog", lambda dialog: dialog.dismiss())
    spare_row.get_by_role("button", name="Delete").click()
    expect(spare_row).to_be_visible()
    assert Document.objects.filter(pk=spare.pk).exists()
    page.once("dialog", lambda dialog: dialog.accept())
    spare_row.get_by_role("button", name="Delete").click()
    expect(page.locator(".messages")).to_contain_text("Deleted “spare”.")
    expect(rows).to_have_count(1)

    # A passage opened from a citation is scrolled into view by the page's script, not an inline one.
    last = policy.chunks.order_by("-ordinal").first()
    assert policy.chunks.count() > 3
    page.goto(f"{live_server.url}/documents/{policy.pk}/?chunk={last.pk}")
    expect(page.locator(f"#chunk-{last.pk}")).to_be_in_viewport()

    # Chat: a streamed answer, its external link marked, and deleting the conversation asks first.
    page.goto(live_server.url + "/chat/")
    page.get_by_role("button", name="Start a conversation").click()
    page.wait_for_load_state("load")  # the conversation's page and its script, before Enter is pressed in it
    page.get_by_label("Question").fill("How do I book a train?")
    page.get_by_label("Question").press("Enter")
    answer = page.locator("#messages .bubble.assistant .answer").last
    expect(answer).to_contain_text("under four hours [1].", timeout=20_000)  # a loaded CI machine: not a measure
    link = answer.locator("a.external")
    expect(link).to_have_attribute("href", "https://evil.example/login")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
    expect(link.locator(".link-host")).to_have_text("↗ evil.example")
    expect(link.locator(".link-host")).to_be_visible()
    wait_until_saved(page)
    page.reload()  # the same marking when the stored answer is rendered by the template
    expect(page.locator("#messages .answer a.external .link-host")).to_have_text("↗ evil.example")
    conversation = Conversation.objects.get(owner=admin_user)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    expect(page.locator(".messages")).to_contain_text("Conversation deleted.")
    assert not Conversation.objects.filter(pk=conversation.pk).exists()

    # The admin: its own scripts run (the changelist's "select all", the two-box member picker).
    page.goto(live_server.url + "/admin/")
    expect(page.get_by_role("link", name="Documents").first).to_be_visible()
    page.goto(live_server.url + "/admin/documents/document/")
    expect(page.locator("b.status-ready")).to_have_text("Ready")
    page.locator("#action-toggle").check()
    expect(page.locator(".action-counter")).to_contain_text("1 of 1 selected")
    page.goto(f"{live_server.url}/admin/documents/document/{policy.pk}/change/")
    expect(page.locator("#document_form")).to_be_visible()
    page.goto(live_server.url + "/admin/documents/collection/add/")
    expect(page.locator("#id_members_from")).to_be_visible()  # made by SelectFilter2.js
    page.locator("#id_owner + .select2 .select2-selection").click()  # the owner's autocomplete (select2)
    page.locator(".select2-search__field").fill("ali")
    expect(page.locator(".select2-results__option")).to_have_text([admin_user.get_username()])
    page.goto(live_server.url + "/admin/core/apitoken/add/")
    expect(page.locator("#apitoken_form")).to_be_visible()

    # The API docs: Swagger UI lists the operations.
    page.goto(live_server.url + "/api/v1/docs")
    expect(page.locator(".opblock").first).to_be_visible()

    assert csp_violations == []


def test_the_api_docs_render_with_no_network_but_the_site(page, csp_violations, live_server):
    site = urlsplit(live_server.url).netloc
    elsewhere: list[str] = []

    def only_the_site(route):
        if urlsplit(route.request.url).netloc == site:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_site)
    page.goto(live_server.url + "/api/v1/docs")
    expect(page.locator(".opblock").first).to_be_visible()
    expect(page.locator(".opblock-summary-path").filter(has_text=re.compile("/api/v1/search"))).not_to_have_count(0)
    assert elsewhere == [], f"the docs asked another site for {elsewhere}"
    assert csp_violations == []

