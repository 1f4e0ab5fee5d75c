"""Every page on a phone (390×844, and the narrowest common width, 360): nothing wider than the screen,
and the main tasks — asking, uploading, finding a conversation — done at that size in the browser.

To cover a new page, add it to PAGES: a path whose {placeholders} name the objects of the `site` fixture.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from playwright.sync_api import expect

from chat.models import Citation, Conversation, Message
from core.services import token_create
from documents import pipeline
from documents import services as document_services
from documents.models import Chunk, Collection, Invitation
from tests.documents_factory import add_text_document
from tests.e2e.conftest import log_in

PHONE = {"width": 390, "height": 844}
NARROWEST = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 800}
# A title as long as the field allows (SciFact's run to ~300 characters): the chat's "Only in" list names it.
LONG_TITLE = ("Effect of physical activity on cognitive function in older adults at risk for Alzheimer disease: "
              "a randomized trial of sixteen weeks with a follow-up at eighteen months, " * 2)[:300]
READY_TIMEOUT = 60_000
LONG_URL = "https://intranet.example.com/policies/travel/" + "very-long-path-segment-" * 8 + "index.html?ref=handbook"
# One line of code wider than any phone: the code block scrolls, the page does not.
CODE_LINE = json.dumps(
    {
        "traveller": "alice",
        "mode": "train",
        "max_duration_hours": 4,
        "approval_required_for": ["flights", "first class", "hotels over budget"],
    }
)
LONG_ANSWER = (
    f"""Employees book trains for trips under four hours [1]. The full policy is at {LONG_URL} and
the booking tool takes a configuration like this:

```json
{CODE_LINE}
```

| Trip | Mode | Approval needed from the travel desk and the cost-centre manager |
| --- | --- | --- |
| Paris–Lyon | train | none, unless it is booked less than twenty-four hours in advance |

Averylongwordwithoutanyspacesthatwouldotherwisepushthebubblepasttheedgeofthescreen [1].
"""
    + "More detail follows in the policy. " * 30
)


@dataclass(frozen=True)
class Page:
    name: str
    path: str  # {conversation}, {document}, {chunk}: objects of the `site` fixture
    signed_in: bool = True
    status: int = 200
    site_menu: bool = True  # the page has the site's menu (base.html), to open and check too


PAGES = [
    Page("login", "/accounts/login/", signed_in=False, site_menu=False),
    Page("chat index", "/chat/?new"),
    Page("conversation with a long answer", "/chat/{conversation}/"),
    Page("documents list", "/documents/"),
    Page("document detail", "/documents/{document}/"),
    Page("cited passage", "/documents/{document}/?chunk={chunk}"),
    Page("more like this passage", "/documents/passages/{chunk}/similar/"),
    Page("collections, with an invitation to answer", "/collections/"),
    Page("a collection, its members and invitations", "/collections/{collection}/"),
    Page("API tokens", "/accounts/tokens/"),
    Page("revoking a token", "/accounts/tokens/{token}/revoke/"),
    Page("not found", "/chat/0/", status=404),
    Page("password change", "/accounts/password_change/", site_menu=False),  # Django's admin-styled form
]


def add_document(owner, collection, name: str, body: bytes, title: str | None = None):
    document = document_services.document_create(
        owner=owner, collection=collection, file=SimpleUploadedFile(name, body), title=title, enqueue=False
    )
    return pipeline.document_ingest(document_id=document.pk)


@pytest.fixture
def site(user, other_user, collection, django_user_model):
    """A user's documents and a conversation whose answer has a code block, a table and a long URL; invitations
    both ways (one waiting for their answer, one they sent), with long names."""
    document = add_document(
        user,
        collection,
        "travel-policy-with-a-rather-long-file-name-for-small-screens.txt",
        b"Employees book trains for trips under four hours. " * 40 + LONG_URL.encode(),
    )
    # A second one: the detail page lists it as similar, the library recommends it (long unbroken names).
    add_document(user, collection, "travel-policy-for-contractors-and-their-managers-" * 3 + ".txt",
                 b"Contractors book trains for trips under four hours, as employees do. " * 30)
    add_document(user, collection, "alzheimer-trial.txt", b"Walking slowed the decline of memory. " * 20,
                 title=LONG_TITLE)
    chunk = Chunk.objects.filter(document=document).order_by("ordinal").first()
    for i in range(12):  # enough to scroll the list
        Conversation.objects.create(owner=user, title=f"An older conversation about expenses and hotels, number {i}")
    conversation = Conversation.objects.create(
        owner=user, collection=collection, title="Which trips go by train, and where is the policy written down?"
    )
    Message.objects.create(
        conversation=conversation,
        role=Message.Role.USER,
        content="Which trips go by train? " + "Please be precise. " * 10 + LONG_URL,
    )
    answer = Message.objects.create(conversation=conversation, role=Message.Role.ASSISTANT, content=LONG_ANSWER)
    Citation.objects.create(message=answer, chunk=chunk, index=1, document_id=document.pk, title=document.title)
    token, _ = token_create(user=user, name="a token for the nightly export job to the finance team's server")
    theirs = Collection.objects.create(
        owner=other_user, name="Quarterly planning notes of the platform team, with minutes and decisions, 2027"
    )
    Invitation.objects.create(collection=theirs, invitee=user, invited_by=other_user)
    colleague = django_user_model.objects.create_user("a.colleague.with.a.rather.long.username@finance.example.com")
    Invitation.objects.create(collection=collection, invitee=colleague, invited_by=user)
    return {"conversation": conversation.pk, "document": document.pk, "chunk": chunk.pk, "collection": collection.pk,
            "token": token.pk}


@pytest.fixture
def touch_page(browser, live_server, user):
    """A phone as it is: 360 px, a touch screen (a coarse pointer, no Shift key), signed in as ``user``."""
    context = browser.new_context(base_url=live_server.url, viewport=NARROWEST, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(error))
    log_in(page, user)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def overflow(page) -> dict:
    """How much wider than the window the page is, and the widest elements sticking out (for the message)."""
    return page.evaluate("""() => {
      const width = window.innerWidth;
      const culprits = [...document.querySelectorAll("body *")]
        .filter((e) => e.getBoundingClientRect().right > width + 0.5 && e.getClientRects().length)
        .slice(0, 5).map((e) => `${e.tagName.toLowerCase()}${e.id ? "#" + e.id : ""}.${e.className}`);
      return {scrollWidth: document.documentElement.scrollWidth, innerWidth: width, culprits};
    }""")


def assert_fits(page):
    sizes = overflow(page)
    assert sizes["scrollWidth"] <= sizes["innerWidth"], f"{page.url} is wider than the screen: {sizes}"


@pytest.mark.parametrize("phone_page", PAGES, ids=[p.name for p in PAGES])
def test_the_page_is_no_wider_than_a_phone(page, sign_in, user, site, live_server, phone_page):
    if phone_page.signed_in:
        sign_in(user)
    for size in (PHONE, NARROWEST):
        page.set_viewport_size(size)
        response = page.goto(live_server.url + phone_page.path.format(**site))
        assert response.status == phone_page.status
        assert_fits(page)
        if phone_page.site_menu:  # the menu opens, and fits too
            page.get_by_role("button", name="Menu").click()
            expect(page.get_by_role("link", name="Documents", exact=True)).to_be_visible()
            assert_fits(page)


@pytest.mark.parametrize("size", [NARROWEST, DESKTOP], ids=["360 px", "1280 px"])
def test_the_chat_filters_fit_the_screen_with_a_long_document_title(page, sign_in, user, site, live_server, size):
    sign_in(user)
    page.set_viewport_size(size)
    page.goto(live_server.url + f"/chat/{site['conversation']}/")
    page.locator("details.filters > summary").click()
    only_in = page.get_by_label("Only in")
    expect(only_in).to_be_visible()
    expect(only_in.locator("option", has_text=LONG_TITLE[:60])).to_have_count(1)
    assert_fits(page)
    for name in ("Only in", "Added before", "File type", "Tag"):
        control = page.get_by_label(name)
        box = control.bounding_box()
        assert 0 <= box["x"] and box["x"] + box["width"] <= size["width"], (name, box)


def test_the_site_menu_and_the_conversation_list_stay_open_on_a_wide_screen(page, sign_in, user, site, live_server):
    sign_in(user)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(live_server.url + f"/chat/{site['conversation']}/")
    expect(page.get_by_role("button", name="Menu")).to_be_hidden()
    expect(page.get_by_role("button", name="☰ Conversations")).to_be_hidden()
    expect(page.locator("#conversation-list")).to_be_visible()
    expect(page.get_by_role("link", name="Documents", exact=True)).to_be_visible()
    expect(page.get_by_text("Enter to send, Shift+Enter for a new line.")).to_be_visible()  # a mouse: a keyboard
    assert_fits(page)
    # The search box's placeholder is shown whole; its label says what is searched.
    search = page.get_by_role("searchbox", name="Search conversations by title and message")
    assert search.evaluate("""(box) => {
      const style = getComputedStyle(box), context = document.createElement("canvas").getContext("2d");
      context.font = style.font;
      const room = box.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
      return context.measureText(box.placeholder).width <= room;
    }"""), search.get_attribute("placeholder")


def test_on_a_phone_the_conversation_list_is_a_drawer(page, sign_in, user, site, live_server):
    page.emulate_media(reduced_motion="reduce")  # no slide: where the drawer is can be measured at once
    sign_in(user)
    page.set_viewport_size(PHONE)
    page.goto(live_server.url + f"/chat/{site['conversation']}/")
    drawer = page.locator("#conversations")
    toggle = page.get_by_role("button", name="☰ Conversations")
    # Closed: the chat starts at the top of the screen, the question box and its button are in reach.
    expect(drawer).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    assert page.locator("#messages").bounding_box()["y"] < 300
    ask_button = page.get_by_role("button", name="Ask", exact=True)
    expect(ask_button).to_be_in_viewport()

    toggle.click()
    expect(drawer).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    assert drawer.bounding_box()["x"] >= 0
    assert_fits(page)
    assert page.locator(".chat").evaluate("chat => chat.inert")  # the page behind takes no focus
    page.keyboard.press("Escape")
    expect(drawer).to_be_hidden()
    assert not page.locator(".chat").evaluate("chat => chat.inert")

    toggle.click()  # then the window widens: the list becomes the sidebar, nothing stays covered
    page.set_viewport_size({"width": 1024, "height": 768})
    expect(drawer).to_be_visible()
    # The page's resize listener lifts inert after the layout changes: waited for, not read at once.
    expect(page.locator(".chat")).to_have_js_property("inert", False)
    page.set_viewport_size(PHONE)
    expect(drawer).to_be_hidden()

    toggle.click()
    page.get_by_role("button", name="Close the conversation list").click()
    expect(drawer).to_be_hidden()

    toggle.click()
    page.get_by_role("searchbox", name="Search conversations").fill("number 3")
    page.get_by_role("searchbox", name="Search conversations").press("Enter")
    expect(page.locator("#conversation-list > li")).to_have_count(1)
    toggle.click()
    page.locator("#conversation-list > li > a").click()
    expect(page.locator("#conversation-title")).to_have_text(
        "An older conversation about expenses and hotels, number 3"
    )
    expect(drawer).to_be_hidden()


def test_asking_a_question_on_a_phone(page, sign_in, user, site, llm, live_server):
    llm.reply_text = "Employees book trains for trips under four hours [1]. " * 6 + LONG_URL
    sign_in(user)
    page.set_viewport_size(PHONE)
    page.goto(live_server.url + f"/chat/{site['conversation']}/")
    box = page.get_by_label("Question")
    box.fill("Which trips do employees book trains for?")
    ask_button = page.get_by_role("button", name="Ask", exact=True)
    expect(ask_button).to_be_in_viewport()
    ask_button.click()

    expect(page.locator("#messages .bubble.user").last).to_have_text("Which trips do employees book trains for?")
    answer = page.locator("#messages .bubble.assistant").last
    expect(answer.locator(".answer")).to_contain_text("index.html?ref=handbook")
    expect(answer.locator("ol.citations")).to_contain_text("travel-policy")
    expect(ask_button).to_be_enabled()
    assert_fits(page)


def test_uploading_a_document_on_a_phone(page, sign_in, user, celery_worker, live_server, tmp_path):
    path = tmp_path / "phone-upload.txt"
    path.write_text("Hotels may cost at most 150 EUR per night. " * 20)
    sign_in(user)
    page.set_viewport_size(PHONE)
    page.goto(live_server.url + "/documents/")
    page.set_input_files("#file-input", [str(path)])
    upload = page.locator("#upload-button")
    expect(upload).to_be_in_viewport()
    upload.click()
    item = page.locator("#documents-table [data-document-id]").filter(has_text="phone-upload")
    expect(item).to_contain_text("Ready", timeout=READY_TIMEOUT)
    assert_fits(page)


def test_on_a_touch_screen_enter_starts_a_new_line_and_the_ask_button_sends(touch_page, site, llm):
    page = touch_page
    page.goto(f"/chat/{site['conversation']}/")
    expect(page.get_by_text("Enter to send", exact=False)).to_be_hidden()  # there is no Shift key
    box = page.get_by_label("Question")
    box.fill("Which trips go by train?")
    box.press("Enter")
    box.press_sequentially("Answer briefly.")
    expect(box).to_have_value("Which trips go by train?\nAnswer briefly.")
    questions = page.locator("#messages .bubble.user")
    expect(questions).to_have_count(1)  # the conversation's earlier question only: nothing was sent

    page.get_by_role("button", name="Ask", exact=True).tap()
    expect(questions).to_have_count(2)
    expect(questions.last).to_have_text("Which trips go by train?\nAnswer briefly.")
    expect(box).to_have_value("")


def test_on_a_touch_screen_citations_the_conversation_menu_and_copy_are_big_enough_to_tap(touch_page, site):
    page = touch_page
    page.goto(f"/chat/{site['conversation']}/")
    page.get_by_role("button", name="☰ Conversations").tap()
    targets = {
        "citation number": page.locator("#messages a.cite").first,
        "⋯ menu": page.locator("#conversation-list li.current .item-menu > summary"),
        "Copy": page.locator("#messages .bubble.assistant").last.get_by_role("button", name="Copy"),
    }
    for name, target in targets.items():
        box = target.bounding_box()
        assert box["width"] >= 32 and box["height"] >= 32, f"the {name} is {box['width']}×{box['height']} px"


@pytest.mark.parametrize("where", ["documents list", "conversation list"])
def test_on_a_phone_checkboxes_are_at_least_24_px_to_tap(page, sign_in, user, site, live_server, where):
    sign_in(user)
    page.set_viewport_size(NARROWEST)
    if where == "documents list":  # each row's, and "All on this page"
        page.goto(live_server.url + "/documents/")
        boxes = page.locator("#documents-table input[type=checkbox], #select-all")
        expected = 3 + 1
    else:  # each conversation's, to delete the ticked ones
        page.goto(live_server.url + f"/chat/{site['conversation']}/")
        page.get_by_role("button", name="☰ Conversations").click()
        boxes = page.locator("#conversation-list input[type=checkbox]")
        expected = 13
    expect(boxes).to_have_count(expected)
    expect(boxes.first).to_be_visible()
    for box in boxes.all():
        size = box.bounding_box()
        name = box.evaluate("(input) => input.getAttribute('aria-label') || input.labels[0].textContent.trim()")
        assert size["width"] >= 24 and size["height"] >= 24, f"{name}: {size['width']}×{size['height']} px"
    assert_fits(page)


def test_on_a_phone_a_citation_opens_its_passage_scrolled_to_it(touch_page, user, collection):
    # Passages tall enough on a phone that the one cited, after its neighbour, starts below the fold.
    text = "\n\n".join(f"Rule {n}.\n" + "Trains are booked for trips under four hours.\n" * 28 for n in range(4))
    document = add_text_document(user, collection, "travel-rules", text)
    chunks = list(Chunk.objects.filter(document=document).order_by("ordinal"))
    assert len(chunks) >= 3, len(chunks)
    cited = chunks[1]
    conversation = Conversation.objects.create(owner=user, collection=collection, title="Trains")
    Message.objects.create(conversation=conversation, role=Message.Role.USER, content="When do we take the train?")
    answer = Message.objects.create(conversation=conversation, role=Message.Role.ASSISTANT,
                                    content="For trips under four hours [1].")
    Citation.objects.create(message=answer, chunk=cited, index=1, document_id=document.pk, title=document.title)
    page = touch_page
    page.goto(f"/chat/{conversation.pk}/")

    with page.context.expect_page() as opened:
        page.locator("#messages a.cite").tap()

    tab = opened.value
    passage = tab.locator(f"#passage-{cited.pk}")
    expect(passage.locator("mark")).to_contain_text("Trains are booked")
    expect(passage).to_be_in_viewport()
    # Its start, not the end of it nor the neighbour before it, is what the reader sees first.
    top = passage.evaluate("(p) => p.getBoundingClientRect().top / innerHeight")
    assert 0 <= top < 0.25, f"the cited passage starts at {top:.0%} of the screen's height"
