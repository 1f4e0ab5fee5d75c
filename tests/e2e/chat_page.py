"""What the browser tests do on a conversation's page."""


def ask(page, question: str) -> None:
    """Type ``question`` into the question box and send it with Enter, as a user does."""
    box = page.get_by_label("Question")
    box.fill(question)
    box.press("Enter")


def last_answer(page):
    """The newest answer's bubble."""
    return page.locator("#messages .bubble.assistant").last
