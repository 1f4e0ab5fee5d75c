"""HTML: the main text without scripts, styles and navigation; headings become the heading path."""

from __future__ import annotations

import re
from pathlib import Path

from documents.parsing.base import Section
from documents.parsing.text import decode_text

HTML_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
HTML_NOISE = ("script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form",
              "iframe", "svg", "canvas", "button", "select", "head", "title", "meta", "link")
# Navigation by role or by the conventional classes (MediaWiki's among them): the boxes of links to other
# pages (.navbox, .vertical-navbox, .sidebar "part of a series" with its "v t e" .navbar), hatnotes ("Main
# article: …", marked .navigation-not-searchable), what is not printed (.noprint: "[update]", "From
# Wikipedia…", portal and sister-project bars), status indicators (coordinates) and edit links.
# An infobox is kept: its rows are the article's facts (founders, headquarters, revenue), not links
# elsewhere.
HTML_NOISE_SELECTORS = ('[role="navigation"]', '[role="banner"]', '[role="contentinfo"]',
                        '[aria-hidden="true"]', ".navbox", ".vertical-navbox", ".sidebar", ".navbar",
                        ".navigation-not-searchable", ".hatnote", ".noprint", ".mw-indicator", ".mw-jump-link",
                        ".mw-editsection", ".mw-cite-backlink", "#mw-navigation", "#mw-panel", "#footer",
                        ".catlinks", ".printfooter", "#toc", ".toc")
# Footnote marks inside sentences ("[18]", "[14]:228"): MediaWiki's sup.reference, or any superscript that
# is only a bracketed number. The app's own citation numbers look the same in an answer.
FOOTNOTE_MARK = re.compile(r"\[\s*\d{1,4}\s*\]")
# Trailing sections of links and citations (MediaWiki's): the heading and everything under it, up to the next
# heading of the same or a higher level, is dropped. Their lists of titles and URLs match many questions and
# answer none. A page's own title (h1) is never one of them: "Notes" as a page title is the whole page.
TRAILING_SECTIONS = frozenset(("external links", "references", "see also", "further reading", "notes",
                               "bibliography"))
HTML_BLOCKS = frozenset(("p", "div", "li", "ul", "ol", "pre", "blockquote", "table", "tr", "section",
                         "article", "main", "dd", "dt", "dl", "br", "figure", "figcaption", "hr") + HTML_HEADINGS)


def parse_html(html: str) -> list[Section]:
    """Main text without scripts, styles and navigation; headings become the heading path."""
    from bs4 import BeautifulSoup, Comment, Doctype, NavigableString, Tag

    soup = BeautifulSoup(html, "lxml")
    for tag in soup.find_all(HTML_NOISE):
        tag.decompose()
    for selector in HTML_NOISE_SELECTORS:
        for tag in soup.select(selector):
            tag.decompose()
    for tag in soup.find_all("sup"):
        if "reference" in (tag.get("class") or ()) or FOOTNOTE_MARK.fullmatch(tag.get_text().strip()):
            tag.decompose()
    root = (
        soup.find("main") or soup.find(role="main") or soup.find("article")
        or soup.find(id="content") or soup.body or soup
    )
    sections: list[Section] = []
    headings: list[tuple[int, str]] = []
    parts: list[str] = []

    def flush():
        text = "".join(parts)
        if text.strip():
            sections.append(Section(text=text, heading_path=tuple(t for _, t in headings)))
        parts.clear()

    skip_inside = None  # the heading whose strings were already taken as its title
    dropping = 0  # the level of the trailing section being dropped, 0 when none is
    for node in root.descendants:  # an iterative walk: deep nesting cannot overflow the stack
        if isinstance(node, Tag):
            if node.name in HTML_HEADINGS:
                title = " ".join(node.get_text(" ").split())
                level = int(node.name[1])
                if dropping and level > dropping:
                    skip_inside = node
                    continue
                if title:
                    dropping = 0
                if title and level > 1 and title.casefold() in TRAILING_SECTIONS:
                    flush()
                    dropping = level
                elif title:
                    flush()
                    headings[:] = [(lvl, t) for lvl, t in headings if lvl < level] + [(level, title)]
                skip_inside = node
            elif dropping:
                continue
            elif node.name in HTML_BLOCKS:
                parts.append("\n\n" if node.name in ("p", "div", "pre", "table", "blockquote") else "\n")
            elif node.name in ("td", "th"):
                parts.append(" | ")
        elif isinstance(node, NavigableString) and not isinstance(node, Comment | Doctype):
            if dropping or (skip_inside is not None and skip_inside in node.parents):
                continue
            in_pre = node.parent is not None and node.parent.name == "pre"
            parts.append(str(node) if in_pre else re.sub(r"[ \t\r\f\v]+", " ", str(node)))
    flush()
    return [Section(text=_tidy_html_text(s.text), heading_path=s.heading_path) for s in sections]


def _tidy_html_text(text: str) -> str:
    lines: list[str] = []
    for line in text.split("\n"):
        line = line.strip().strip("|").strip()
        if line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines)


def parse_path(path: Path, *, max_pages: int) -> list[Section]:
    return parse_html(decode_text(path.read_bytes()))
