"""Answers rendered from Markdown (chat.templatetags.answers): links that leave the site say where they go."""

from __future__ import annotations

import re

import pytest

from chat.templatetags.answers import link_destination, render_markdown

PHISHING = "Your session has expired. [Sign in again](https://evil.example/login \"RAG chat sign-in\") [1]."


def links(html: str) -> list[str]:
    return re.findall(r"<a\b[^>]*>.*?</a>", html)


def test_a_link_to_another_site_shows_its_host_and_opens_apart():
    html = render_markdown(PHISHING, {1: "/documents/1/?chunk=2#chunk-2"})
    link = next(a for a in links(html) if "evil.example" in a)
    assert 'class="external"' in link and 'target="_blank"' in link
    assert 'rel="noopener noreferrer nofollow"' in link
    assert '<small class="link-host">↗ evil.example</small>' in link  # visible, part of the link
    assert "RAG chat sign-in" not in html  # the document's title for its link is replaced by ours
    assert 'title="Opens evil.example in a new tab' in link


def test_citations_and_paths_of_this_site_are_not_marked_external():
    html = render_markdown("See [the list](/documents/) and [1].", {1: "/documents/1/?chunk=2#chunk-2"})
    assert "external" not in html and "link-host" not in html and "_blank" not in html
    assert '<a class="cite" href="/documents/1/?chunk=2#chunk-2"' in html


@pytest.mark.parametrize("href, host", [
    ("https://our.site@evil.example:8443/x", "evil.example"),  # credentials before the real host
    ("//evil.example/login", "evil.example"),  # scheme-relative
    ("/\\evil.example/login", "evil.example"),  # a browser reads the backslash as a slash
    ("HTTPS://EVIL.example./", "evil.example"),
    ("http:evil.example", "evil.example"),
    ("https://аpple.com/", "xn--pple-43d.com"),  # a Cyrillic look-alike shows as what it is
])
def test_every_spelling_of_another_site_is_caught(href, host):
    assert link_destination(href) == ("web", host)
    html = render_markdown(f"[Sign in]({href})")
    assert f'<small class="link-host">↗ {host}</small>' in html and 'target="_blank"' in html


def test_an_autolink_and_a_mail_link_are_marked_too():
    html = render_markdown("<https://evil.example/x> or [write](mailto:help@evil.example)")
    assert '<small class="link-host">↗ evil.example</small>' in html
    assert '<small class="link-host">✉ help@evil.example</small>' in html


def test_other_schemes_lose_their_target():
    html = render_markdown("[a](javascript:alert(1)) [b](data:text/html,hi) [c](/documents/3/)")
    assert "javascript:" not in html and "data:" not in html and 'href="/documents/3/"' in html
