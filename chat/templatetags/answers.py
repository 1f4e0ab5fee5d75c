"""Render an answer's Markdown safely, with its [n] citations as links to the cited passage."""

import re

import markdown as md
import nh3
from django import template
from django.utils.safestring import mark_safe

register = template.Library()

ALLOWED_TAGS = {"p", "br", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li", "h3", "h4",
                "table", "thead", "tbody", "tr", "th", "td", "a", "hr", "del"}
CITATION = re.compile(r"\[(\d{1,3})\]")


def render_markdown(text: str, citations: dict[int, str] | None = None) -> str:
    """Markdown → HTML, sanitised by nh3 (no scripts, no javascript: links), citations linked."""
    html = md.markdown(text or "", extensions=["fenced_code", "tables", "sane_lists"])
    html = nh3.clean(
        html, tags=ALLOWED_TAGS, attributes={"a": {"href", "title"}}, url_schemes={"http", "https", "mailto"}
    )
    if citations:
        def link(match):
            url = citations.get(int(match.group(1)))
            return f'<a class="cite" href="{url}">[{match.group(1)}]</a>' if url else match.group(0)

        html = CITATION.sub(link, html)
    return html


@register.filter
def answer_html(message) -> str:
    from chat.services import citation_json

    urls = {c.index: citation_json(c)["url"] for c in message.citation_set.all() if c.chunk_id}
    return mark_safe(render_markdown(message.content, urls))  # noqa: S308 — sanitised by nh3 above
