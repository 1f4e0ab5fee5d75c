"""Collections, members and API tokens in a real browser, on a desktop and on a 390×844 phone."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from core.models import ApiToken
from documents.models import Collection

PHONE = {"width": 390, "height": 844}
# The innermost elements that reach past the screen's right edge, for the failure message.
WIDER_THAN_SCREEN = """[...document.querySelectorAll("body *")]
  .filter((e) => e.getBoundingClientRect().right > innerWidth + 0.5)
  .filter((e) => ![...e.children].some((c) => c.getBoundingClientRect().right > innerWidth + 0.5))
  .slice(0, 5).map((e) => `${e.tagName.toLowerCase()}${e.id ? "#" + e.id : ""}.${e.className}`)"""


def assert_fits(page) -> None:
    """No horizontal scrolling: nothing on the page is wider than the screen."""
    width, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    wide = page.evaluate(WIDER_THAN_SCREEN) if width > inner else []
    assert width <= inner, f"{page.url} is {width}px wide on a {inner}px screen: {wide}"


@pytest.fixture(params=["desktop", "phone"])
def screen(request, page):
    if request.param == "phone":
        page.set_viewport_size(PHONE)
    return request.param


def open_from_the_menu(page, name: str) -> None:
    """Follow a site-menu link; on a phone the menu is folded behind its button first."""
    toggle = page.get_by_role("button", name="Menu")
    if toggle.is_visible():
        toggle.click()
    page.get_by_role("link", name=name, exact=True).click()


def test_an_owner_invites_a_member_who_accepts_and_is_then_removed(signed_in_page, sign_in, screen, user, other_user):
    page = signed_in_page
    open_from_the_menu(page, "Collections")
    expect(page.get_by_role("heading", name="Collections", exact=True)).to_be_visible()
    assert_fits(page)
    page.get_by_label("Name").fill("Team handbook")
    page.get_by_role("button", name="Create collection").click()
    expect(page.get_by_role("heading", name="Team handbook")).to_be_visible()
    expect(page.locator("#no-members")).to_be_visible()
    assert_fits(page)

    page.get_by_label("Username or e-mail").fill("nobody@example.com")
    page.get_by_role("button", name="Invite", exact=True).click()
    expect(page.get_by_role("alert")).to_have_text("No user with that username or e-mail.")
    assert_fits(page)

    page.get_by_label("Username or e-mail").fill("mallory@example.com")
    page.get_by_role("button", name="Invite", exact=True).click()
    expect(page.locator(".message.success")).to_have_text("Invited mallory: they see the collection once they accept.")
    expect(page.locator("#invitations")).to_contain_text("mallory")
    expect(page.locator("#members")).not_to_contain_text("mallory")  # not a member until they accept
    assert_fits(page)
    collection = Collection.objects.get(name="Team handbook")
    assert not collection.members.exists()

    sign_in(other_user)
    open_from_the_menu(page, "Collections")
    invitations = page.locator("#invitations")
    expect(invitations).to_contain_text("Team handbook")
    expect(invitations).to_contain_text("from alice")
    expect(page.locator("#shared-collections")).to_have_count(0)  # nothing shared with mallory yet
    assert_fits(page)
    invitations.get_by_role("button", name="Accept the invitation to Team handbook").click()
    expect(page.locator(".message.success")).to_have_text(
        "You joined “Team handbook”: its documents are now in your searches."
    )
    expect(page.get_by_role("heading", name="Team handbook")).to_be_visible()
    expect(page.locator("#collection-owner")).to_contain_text("Owned by alice")
    assert_fits(page)
    assert list(collection.members.all()) == [other_user]
    page.goto("/collections/")
    expect(page.locator("#invitations")).to_have_count(0)
    expect(page.locator("#shared-collections")).to_contain_text("Team handbook")

    sign_in(user)
    page.goto(f"/collections/{collection.pk}/")
    expect(page.locator("#members")).to_contain_text("mallory")
    expect(page.locator("#invitations")).to_have_count(0)
    page.once("dialog", lambda dialog: dialog.dismiss())  # asked first: dismissing keeps the member
    page.get_by_role("button", name="Remove mallory").click()
    expect(page.locator("#members")).to_contain_text("mallory")
    assert collection.members.exists()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Remove mallory").click()
    expect(page.locator(".message.success")).to_have_text("mallory can no longer read “Team handbook”.")
    expect(page.locator("#members")).not_to_contain_text("mallory")
    assert not collection.members.exists()


def test_an_invitee_declines_and_an_owner_withdraws_an_invitation(sign_in, page, screen, user, other_user):
    from documents import sharing

    declined = sharing.collection_create(owner=user, name="Alice's board minutes, with a long name to wrap on phones")
    withdrawn = sharing.collection_create(owner=user, name="Drafts")
    for collection in (declined, withdrawn):
        sharing.member_invite(collection=collection, identifier="mallory", actor=user)
    sign_in(user)
    page.goto(f"/collections/{withdrawn.pk}/")
    page.get_by_role("button", name="Withdraw the invitation of mallory").click()
    expect(page.locator(".message.success")).to_have_text("Withdrew the invitation of mallory to “Drafts”.")
    expect(page.locator("#invitations")).to_have_count(0)

    sign_in(other_user)
    page.goto("/collections/")
    invitations = page.locator("#invitations")
    expect(invitations.get_by_role("listitem")).to_have_count(1)
    assert_fits(page)
    invitations.get_by_role("button", name=re.compile("^Decline the invitation to Alice")).click()
    expect(page.locator(".message.success")).to_contain_text("You declined the invitation to “Alice's board minutes")
    expect(page.locator("#invitations")).to_have_count(0)
    assert not declined.members.exists() and not withdrawn.members.exists()


def test_a_member_sees_the_shared_collection_and_its_owner_read_only(sign_in, page, screen, user, other_user):
    shared = Collection.objects.create(name="Alice's board minutes, shared with a long name to wrap", owner=user)
    shared.members.add(other_user)
    sign_in(other_user)
    page.goto("/collections/")
    shared_list = page.locator("#shared-collections")
    expect(shared_list).to_contain_text("owned by alice")
    assert_fits(page)
    shared_list.get_by_role("link").click()
    expect(page.locator("#collection-owner")).to_contain_text("Owned by alice")
    expect(page.locator("#member-form")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("^Remove"))).to_have_count(0)
    assert_fits(page)


def test_a_user_creates_a_token_sees_it_once_and_revokes_it(signed_in_page, screen, user):
    page = signed_in_page
    open_from_the_menu(page, "API tokens")
    expect(page.locator("#no-tokens")).to_be_visible()
    assert_fits(page)
    page.get_by_label("Name").fill("laptop scripts")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#raw-token").input_value()
    assert secret.startswith("rag_") and len(secret) > 40
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    assert_fits(page)
    token = ApiToken.objects.get(user=user)
    assert token.name == "laptop scripts"

    page.get_by_role("link", name="Back to your API tokens").click()
    listed = page.locator(f"#token-{token.pk}")
    expect(listed).to_contain_text("laptop scripts")
    expect(listed).to_contain_text("never")
    assert secret not in page.content()  # shown once, never again
    assert_fits(page)

    listed.get_by_role("link", name="Revoke…").click()
    expect(page.get_by_role("heading", name="Revoke “laptop scripts”?")).to_be_visible()
    assert_fits(page)
    page.get_by_role("button", name="Revoke token").click()
    expect(page.locator(".message.success")).to_contain_text("Revoked the token “laptop scripts”")
    expect(page.locator("#no-tokens")).to_be_visible()
    token.refresh_from_db()
    assert token.revoked_at is not None
