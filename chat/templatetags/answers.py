"""Render an answer's Markdown safely, with its [n] citations as links to the cited passage."""

import xml.etree.ElementTree as etree

import markdown as md
import nh3
from django import template
from django.utils.safestring import mark_safe
from markdown.inlinepatterns import InlineProcessor
from markdown.util import AtomicString

register = template.Library()

ALLOWED_TAGS = {"p", "br", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li", "h3", "h4",
                "table", "thead", "tbody", "tr", "th", "td", "a", "hr", "del"}
# [1], and the [1, 2] models also write (as chat.services counts them).
CITATION = r"\[([0-9]{1,3}(?:\s*,\s*[0-9]{1,3})*)\]"


class _CitationLinks(InlineProcessor):
    """``[n]`` → a link to passage n. An inline pattern, so never inside code spans or attributes."""

    def __init__(self, urls: dict[int, str]):
        super().__init__(CITATION)
        self.urls = urls

    def handleMatch(self, match, data):  # noqa: N802 (Markdown's naming)
        numbers = [int(n) for n in match.group(1).split(",")]
        if not any(self.urls.get(n) for n in numbers):
            return None, None, None  # numbers with no passage behind them stay plain text
        group = etree.Element("span")  # nh3 drops the span and keeps the links: [1, 2] → [1][2]
        for n in numbers:
            url = self.urls.get(n)
            if url:
                link = etree.SubElement(group, "a", {"class": "cite", "href": url, "title": f"Source {n}"})
                link.text = AtomicString(f"[{n}]")
            elif len(group):
                group[-1].tail = (group[-1].tail or "") + f"[{n}]"
            else:
                group.text = (group.text or "") + f"[{n}]"
        return group, match.start(0), match.end(0)


def render_markdown(text: str, citations: dict[int, str] | None = None) -> str:
    """Markdown → HTML, sanitised by nh3 (no scripts, no javascript: links), citations linked.

    Raw HTML in the text is shown as text, not interpreted: answers quote documents, and a
    document that contains ``<script>`` should be quoted, not dropped or run.
    """
    renderer = md.Markdown(extensions=["fenced_code", "tables", "sane_lists"])
    renderer.preprocessors.deregister("html_block")
    renderer.inlinePatterns.deregister("html")
    # Above links and references (160, 170), below backticks and escapes (190, 180).
    renderer.inlinePatterns.register(_CitationLinks(citations or {}), "citation", 175)
    html = renderer.convert(text or "")
    return nh3.clean(
        html, tags=ALLOWED_TAGS, attributes={"a": {"href", "title"}}, allowed_classes={"a": {"cite"}},
        url_schemes={"http", "https", "mailto"},
    )


@register.filter
def answer_html(message) -> str:
    from chat.services import citation_json

    urls = {c.index: citation_json(c)["url"] for c in message.citation_set.all() if c.chunk_id}
    return mark_safe(render_markdown(message.content, urls))  # noqa: S308 — sanitised by nh3 above
