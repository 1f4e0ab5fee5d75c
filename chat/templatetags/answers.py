"""Render an answer's Markdown safely, with its [n] citations as links to the cited passage."""

import re
import xml.etree.ElementTree as etree
from urllib.parse import unquote

import markdown as md
import nh3
from django import template
from django.utils.safestring import mark_safe
from markdown.inlinepatterns import InlineProcessor
from markdown.treeprocessors import Treeprocessor
from markdown.util import AtomicString

from chat.citations import label_of
from chat.prompting import CITATION

register = template.Library()

ALLOWED_TAGS = {"p", "br", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li", "h3", "h4",
                "table", "thead", "tbody", "tr", "th", "td", "a", "hr", "del", "small"}


class _CitationLinks(InlineProcessor):
    """``[n]`` → a link to passage n. An inline pattern, so never inside code spans or attributes."""

    def __init__(self, urls: dict[int, str]):
        super().__init__(CITATION.pattern)
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


# What a browser ignores in a URL: leading/trailing C0 controls and spaces, tabs and newlines anywhere.
_URL_EDGES = "".join(chr(c) for c in range(0x21))
_URL_DROPPED = str.maketrans("", "", "\t\n\r")
_SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*):")


def link_destination(href: str) -> tuple[str, str] | None:
    """Where a link in an answer leaves this site for: ``(kind, shown)``, or None for a path on this site.

    ``kind`` is "web" (``shown``: the host, in its IDNA form so that a look-alike in another script shows
    as such), "mail" (the address) or "other" (a scheme such as javascript:, shown nowhere). The URL is
    read as a browser reads it: a backslash is a slash, and ``//host``, ``/\\host`` and ``http:host``
    all go to that host, so no spelling of another site passes for a path of ours.
    """
    url = href.strip(_URL_EDGES).translate(_URL_DROPPED).replace("\\", "/")
    scheme = _SCHEME.match(url)
    if scheme is None:
        if not url.startswith("//"):
            return None
        authority = url
    elif scheme.group(1).lower() == "mailto":
        return "mail", unquote(url[scheme.end():].split("?", 1)[0])
    elif scheme.group(1).lower() in ("http", "https"):
        authority = url[scheme.end():]
    else:
        return "other", scheme.group(1).lower()
    authority = re.split(r"[/?#]", authority.lstrip("/"), maxsplit=1)[0]
    host = authority.rpartition("@")[2]  # https://our.site@evil.example/ goes to evil.example
    if not host.startswith("["):
        host = host.partition(":")[0]
    host = host.lower().rstrip(".")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        host = host.encode("ascii", "backslashreplace").decode("ascii")
    return "web", host or "another site"


class _ExternalLinks(Treeprocessor):
    """Links that leave the site say so: an answer quotes documents, and a document can say "your session
    has expired, sign in again" with a link to a look-alike site. Such a link shows the host (or address)
    it goes to, opens in a new tab with neither our page as its opener nor a referrer, is not followed by
    crawlers, and carries our title, not the document's. Any other scheme loses its target (nh3 agrees).
    """

    def run(self, root):
        for link in root.iter("a"):
            if link.get("class") == "cite":
                continue  # a citation, made by _CitationLinks
            destination = link_destination(link.get("href") or "")
            if destination is None:
                continue
            kind, shown = destination
            if kind == "other":
                del link.attrib["href"]
                continue
            link.set("class", "external")
            link.set("target", "_blank")
            link.set("title", f"Opens {shown} in a new tab: another site, not this one"
                     if kind == "web" else f"Writes an e-mail to {shown}")
            marker = etree.SubElement(link, "small", {"class": "link-host"})
            marker.text = AtomicString(f"↗ {shown}" if kind == "web" else f"✉ {shown}")


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
    renderer.treeprocessors.register(_ExternalLinks(renderer), "external_links", 15)  # after "inline" (20)
    html = renderer.convert(text or "")
    return nh3.clean(
        html, tags=ALLOWED_TAGS, attributes={"a": {"href", "title"}},
        allowed_classes={"a": {"cite", "external"}, "small": {"link-host"}},
        tag_attribute_values={"a": {"target": {"_blank"}}},
        link_rel="noopener noreferrer nofollow", url_schemes={"http", "https", "mailto"},
    )


@register.filter
def answer_html(message) -> str:
    from chat.services import citation_json

    urls = {c.index: citation_json(c)["url"] for c in message.citation_set.all() if c.chunk_id}
    return mark_safe(render_markdown(message.content, urls))  # noqa: S308 — sanitised by nh3 above


@register.filter
def citation_label(citation) -> str:
    """Where the cited passage is: "Title, page 4", "Title › Heading", "Title, passage 3 of 12"."""
    return label_of(citation)
