"""What the browser tests do on a conversation's page."""

from playwright.sync_api import expect


def ask(page, question: str) -> None:
    """Type ``question`` into the question box and send it with Enter, as a user does."""
    box = page.get_by_label("Question")
    box.fill(question)
    box.press("Enter")


def last_answer(page):
    """The newest answer's bubble."""
    return page.locator("#messages .bubble.assistant").last


def wait_until_saved(page) -> None:
    """Wait until the newest answer's stream has ended, and with it the server's save: its Copy button appears
    only then. Text seen while it streams is not yet saved, so a reload before this may show the old state."""
    expect(last_answer(page).get_by_role("button", name="Copy")).to_be_visible()
