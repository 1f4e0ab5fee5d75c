"""documents/parsing/: each format's text and structure, the type checks, and the guard."""

import os
import re
import time
import zipfile

import pytest

from documents import parsing
from documents.exceptions import (
    CorruptDocument,
    DocumentTooLarge,
    EmptyDocument,
    EncryptedDocument,
    NoExtractableText,
    ParsingTimeout,
    UnsupportedFileType,
)
from documents.parsing import Section, detect_kind, parse_file, parse_file_guarded
from tests import documents_factory as factory


def parse(path, **kwargs):
    return parse_file_guarded(path=path, filename=path.name, **kwargs)


def test_pdf_sections_carry_their_page_numbers(tmp_path):
    path = factory.make_pdf(tmp_path / "a.pdf", ["Alpha page text.", "", "Gamma page text."])
    sections = parse(path)
    assert [(s.page, s.text) for s in sections] == [(1, "Alpha page text."), (3, "Gamma page text.")]


@pytest.mark.parametrize("algorithm", ["AES-256", "AES-128", "RC4-128"])
def test_encrypted_pdf_is_reported_as_password_protected(tmp_path, algorithm):
    with pytest.raises(EncryptedDocument) as caught:
        parse(factory.make_encrypted_pdf(tmp_path / "locked.pdf", algorithm=algorithm))
    assert str(caught.value) == "The PDF is password-protected; upload a copy without a password."
    assert "password" in caught.value.detail.lower()  # each reader's words, for the operators


@pytest.mark.parametrize("algorithm", ["AES-256", "RC4-128"])
def test_pdf_encrypted_without_a_user_password_is_read(tmp_path, algorithm):
    """Only permissions set (anyone may open it): read like any PDF, whatever the cipher."""
    path = factory.make_encrypted_pdf(tmp_path / "permissions.pdf", password="", algorithm=algorithm)
    assert [s.text for s in parse(path)] == ["Confidential salary bands for every team."]


def test_image_only_pdf_is_reported_as_scanned_with_ocr_advice(tmp_path):
    with pytest.raises(NoExtractableText) as caught:
        parse(factory.make_image_only_pdf(tmp_path / "scan.pdf"))
    assert str(caught.value) == NoExtractableText.default_message and "OCR" in str(caught.value)


def test_blank_pdf_is_reported_blank_not_scanned(tmp_path):
    with pytest.raises(NoExtractableText) as caught:
        parse(factory.make_blank_pdf(tmp_path / "blank.pdf"))
    assert str(caught.value) == NoExtractableText.BLANK and "OCR" not in str(caught.value)


def test_pdf_over_the_page_limit_is_refused_with_the_limit(tmp_path):
    path = factory.make_pdf(tmp_path / "long.pdf", [f"Page {n}" for n in range(12)])
    with pytest.raises(DocumentTooLarge, match=r"^The PDF has 12 pages; the limit is 10\. Split it") as caught:
        parse(path, max_pages=10)
    assert caught.value.detail == "PARSE_MAX_PAGES=10"


def test_truncated_pdf_fails_as_damaged_with_the_readers_words_for_the_operators(tmp_path):
    good = factory.make_pdf(tmp_path / "good.pdf", ["Some text that will be cut off."])
    path = tmp_path / "cut.pdf"
    path.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CorruptDocument) as caught:
        parse(path)
    assert str(caught.value) == CorruptDocument.PDF
    assert "pdfium" in caught.value.detail and "pypdf" in caught.value.detail


def test_pdf_without_startxref_is_read_not_reported_damaged(tmp_path):
    """pypdf gives up on it ("startxref not found"); PDFium reads it, so the document is not damaged."""
    good = factory.make_pdf(tmp_path / "good.pdf", ["The vault code is 4711."])
    path = tmp_path / "no-startxref.pdf"
    data = good.read_bytes()
    path.write_bytes(data[: data.rfind(b"startxref")])
    assert [s.text for s in parse(path)] == ["The vault code is 4711."]


def test_pdf_whose_trailer_lost_its_root_is_read_by_the_fallback_reader(tmp_path):
    """PDFium refuses a trailer without /Root; pypdf finds the catalogue by searching for it."""
    good = factory.make_pdf(tmp_path / "good.pdf", ["The vault code is 4711."])
    path = tmp_path / "no-root.pdf"
    path.write_bytes(re.sub(rb"/Root \d+ 0 R", b"", good.read_bytes()))
    assert [s.text for s in parse(path)] == ["The vault code is 4711."]


@pytest.mark.shared
def test_shared_pdf_without_startxref_is_read(fixtures_dir):
    [section] = parse(fixtures_dir / "bad-no-startxref.pdf")
    assert "Hello World" in section.text


@pytest.mark.shared
def test_shared_image_only_pdf_is_scanned_and_empty_text_file_is_empty(fixtures_dir):
    with pytest.raises(NoExtractableText, match="scanned images"):
        parse(fixtures_dir / "bad-image-only.pdf")
    with pytest.raises(EmptyDocument, match="^The file is empty; upload a copy"):
        parse(fixtures_dir / "bad-empty.txt")


def test_docx_keeps_headings_as_a_path_and_tables_as_rows(tmp_path):
    path = factory.make_docx(
        tmp_path / "handbook.docx", "Handbook",
        [("Leave", ["Everyone has 25 days of leave."]), ("Travel", ["Book trains over flights."])],
        table=[["Grade", "Budget"], ["Junior", "1000 EUR"]],
    )
    sections = parse(path)
    by_heading = {s.heading_path: s.text for s in sections}
    assert by_heading[("Handbook", "Leave")] == "Everyone has 25 days of leave."
    assert "Grade | Budget\nJunior | 1000 EUR" in by_heading[("Handbook", "Travel")]


def test_docx_with_a_malformed_table_keeps_the_table_text_and_the_rest(tmp_path):
    """python-docx raises "no `tc` element at grid_offset=1" on this table; its text is read without the grid."""
    sections = parse(factory.make_docx_with_malformed_table(tmp_path / "travel.docx"))
    text = "\n".join(s.text for s in sections)
    assert "Budgets per grade are in the table below." in text and "Book trains over flights." in text
    assert "Grade" in text and "Junior | 1000 EUR" in text and "Senior | 2000 EUR" in text


def test_docx_zip_bomb_is_refused_before_it_expands(tmp_path, monkeypatch):
    path = factory.make_docx(tmp_path / "bomb.docx", "Bomb", [("Part", ["text"])])
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/padding.xml", b"\0" * (8 * 1024 * 1024))  # compresses to ~8 KB
    assert path.stat().st_size < 100_000
    monkeypatch.setattr(parsing.limits, "DOCX_MAX_UNCOMPRESSED", 4 * 1024 * 1024)
    with pytest.raises(DocumentTooLarge, match="expands to 8 MB"):
        parse(path)


def test_html_keeps_the_main_text_and_drops_scripts_styles_and_navigation(tmp_path):
    sections = [("Leave", "Twenty-five days."), ("Travel", "Trains.")]
    path = factory.make_html(tmp_path / "page.html", "Policies", sections)
    sections = parse(path)
    text = "\n".join(s.text for s in sections)
    assert "Twenty-five days." in text and "Trains." in text
    for noise in ("SCRIPT-TEXT", "NAVIGATION-HOME", "FOOTER-COPYRIGHT", "color: red"):
        assert noise not in text
    assert [s.heading_path for s in sections] == [("Policies", "Leave"), ("Policies", "Travel")]


def test_deeply_nested_html_is_read_without_exhausting_the_stack(tmp_path):
    path = tmp_path / "deep.html"
    path.write_text("<html><body>" + "<div>" * 50_000 + "deep text" + "</div>" * 50_000 + "</body></html>")
    try:
        sections = parse(path)
    except CorruptDocument as error:  # refusing is fine too, as long as it is a clear reason
        assert str(error).endswith(".")
    else:
        assert "deep text" in " ".join(s.text for s in sections)


def test_markdown_headings_become_a_path_but_not_inside_code_fences():
    text = "# Guide\n\nIntro.\n\n## Setup\n\n```bash\n# not a heading\nmake run\n```\n\n## Use\n\nAsk."
    sections = parsing.parse_markdown(text)
    assert [s.heading_path for s in sections] == [("Guide",), ("Guide", "Setup"), ("Guide", "Use")]
    assert "# not a heading" in sections[1].text


@pytest.mark.parametrize(
    ("text", "encoding"),
    [("Grüße aus Köln – „Straße“ kostet 5 €.", "cp1252"), ("Äpfel, Öl und Übermut.", "latin-1"),
     ("Ünïcödé ✓ 漢字", "utf-16"), ("Привет, мир: как дела у всех?", "cp1251")],
)
def test_text_in_legacy_encodings_decodes_without_mojibake(tmp_path, text, encoding):
    path = factory.make_text(tmp_path / "note.txt", (text + "\n") * 20, encoding=encoding)
    sections = parse(path)
    assert sections[0].text.splitlines()[0] == text


def test_nul_and_control_characters_are_removed(tmp_path):
    path = factory.make_markdown(tmp_path / "x.md", "before\x00after\x07 and\ttabs\r\nnext line")
    [section] = parse_file(path, "markdown")
    assert section.text == "beforeafter and\ttabs\nnext line"


def test_renamed_executable_is_refused_naming_the_supported_types(tmp_path):
    path = tmp_path / "invoice.pdf"
    path.write_bytes(b"\x7fELF\x02\x01\x01" + b"\x00" * 500)
    with pytest.raises(UnsupportedFileType, match="a program .* Supported formats: PDF, Word"):
        detect_kind(path, "invoice.pdf")


def test_text_named_pdf_is_refused_as_not_a_pdf(tmp_path):
    path = factory.make_text(tmp_path / "invoice.pdf", "Just some words.")
    with pytest.raises(UnsupportedFileType, match=r"^The file is named \.pdf but is not a PDF; .* Supported formats"):
        detect_kind(path, "invoice.pdf")


def test_binary_with_an_unknown_name_is_unsupported(tmp_path):
    path = tmp_path / "photo.bin"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    with pytest.raises(UnsupportedFileType, match="This file is an image, .*OCR.* Supported formats: PDF"):
        detect_kind(path, "photo.bin")


def test_kind_comes_from_content_then_name_then_declared_type(tmp_path):
    pdf = factory.make_pdf(tmp_path / "a.pdf", ["x"])
    renamed = tmp_path / "report.txt"
    renamed.write_bytes(pdf.read_bytes())
    assert detect_kind(renamed, "report.txt") == "pdf"
    docx = factory.make_docx(tmp_path / "d.docx", "T", [])
    assert detect_kind(docx, "upload") == "docx"
    html = factory.make_text(tmp_path / "page", "<!DOCTYPE html><html><body>x</body></html>")
    assert detect_kind(html, "page") == "html"
    markdown = factory.make_text(tmp_path / "readme", "# Title")
    assert detect_kind(markdown, "readme", "text/markdown") == "markdown"
    assert detect_kind(markdown, "readme") == "text"


def test_empty_and_whitespace_files_say_so(tmp_path):
    with pytest.raises(EmptyDocument, match="empty"):
        parse(factory.make_text(tmp_path / "empty.txt", ""))
    with pytest.raises(EmptyDocument, match="no text to index"):
        parse(factory.make_text(tmp_path / "blank.txt", " \n\t\n "))


# The guard: a forked child with a timeout and a memory limit. The parent's module state is
# the child's, so replacing a parser in the parent replaces it in the child.


def test_a_parser_that_hangs_is_killed_at_the_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(parsing.guard, "parse_file", lambda *args, **kwargs: time.sleep(60))
    started = time.monotonic()
    with pytest.raises(ParsingTimeout, match="took too long") as caught:
        parse(factory.make_text(tmp_path / "a.txt", "text"), timeout=1)
    assert caught.value.detail == "stopped after PARSE_TIMEOUT_SECONDS=1"
    assert time.monotonic() - started < 10


def test_a_parser_that_eats_memory_stops_at_the_limit(tmp_path, monkeypatch):
    def hog(*args, **kwargs):
        blocks = []
        while True:
            blocks.append(bytearray(64 * 1024 * 1024))

    monkeypatch.setattr(parsing.guard, "parse_file", hog)
    with pytest.raises(DocumentTooLarge, match="more memory than this server allows") as caught:
        parse(factory.make_text(tmp_path / "a.txt", "text"), max_memory_mb=256)
    assert "PARSE_MAX_MEMORY_MB=256" in caught.value.detail


def test_a_parser_that_dies_is_reported_and_the_parent_lives(tmp_path, monkeypatch):
    monkeypatch.setattr(parsing.guard, "parse_file", lambda *args, **kwargs: os.kill(os.getpid(), 9))
    with pytest.raises(DocumentTooLarge, match="more memory than this server allows") as caught:
        parse(factory.make_text(tmp_path / "a.txt", "text"))
    assert "crashed" in caught.value.detail
    monkeypatch.undo()
    assert parse(factory.make_text(tmp_path / "b.txt", "still here")) == [Section("still here")]


def test_an_unexpected_parser_error_becomes_a_reason(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("/Root")

    monkeypatch.setattr(parsing.guard, "parse_file", broken)
    with pytest.raises(CorruptDocument) as caught:
        parse(factory.make_text(tmp_path / "a.txt", "text"))
    assert str(caught.value) == CorruptDocument.default_message and caught.value.detail == "KeyError: '/Root'"


def test_large_output_crosses_the_pipe_intact(tmp_path):
    text = "\n\n".join(f"Paragraph {n}" + " word" * 200 for n in range(2000))  # ~2 MB
    [section] = parse(factory.make_text(tmp_path / "big.txt", text))
    assert section.text == text


@pytest.mark.shared
def test_shared_cyclic_page_tree_keeps_the_page_that_can_be_read(fixtures_dir):
    """pypdf refuses the whole file ("Detected cyclic page references"); PDFium reads its first page."""
    started = time.monotonic()
    sections = parse(fixtures_dir / "bad-cyclic-pages.pdf", timeout=30)
    assert [(s.page, s.text) for s in sections] == [(1, "Testcase: ’Pages loop’")]
    assert time.monotonic() - started < 30


@pytest.mark.shared
def test_shared_wikipedia_page_keeps_article_text_without_navigation(fixtures_dir):
    sections = parse(fixtures_dir / "good-wikipedia.html")
    text = "\n".join(s.text for s in sections)
    assert "Microsoft" in text and "Jump to content" not in text and "var " not in text
    assert any(path[:1] == ("History",) for path in (s.heading_path for s in sections))


@pytest.mark.shared
def test_shared_wikipedia_page_indexes_no_navigation_box_hatnote_or_footnote_mark(fixtures_dir):
    from documents.chunking import chunk_sections

    chunks = [draft.text for draft in chunk_sections(parse(fixtures_dir / "good-wikipedia.html"))]
    text = "\n".join(chunks)
    # The "series about Bill Gates" sidebar and its "v t e" links, the navboxes, hatnotes and what is not printed.
    for noise in ("Match for Africa", "The Giving Pledge", "This article is part of", "Main article:",
                  "From Wikipedia, the free encyclopedia", "[update]", "\nv\nt\ne", "Outline"):
        assert noise not in text, noise
    assert not re.search(r"\[\d+\]|\^ ", text), re.search(r".{40}(\[\d+\]|\^ ).{40}", text).group()
    # The article's body and the infobox's facts are kept, the sentences whole where the marks were.
    assert any("Microsoft was founded by Bill Gates and Paul Allen on April 4, 1975, to develop" in c for c in chunks)
    assert "computer programming. In 1972, they founded Traf-O-Data" in text
    assert "Headquarters | One Microsoft Way" in text

    # The trailing "See also", "References" and "External links" lists are not indexed; "Controversies",
    # the last section before them, is.
    for noise in ("List of Microsoft software", "Retrieved", "Archived from the original", "Official website"):
        assert noise not in text, noise
    assert "Criticism of Microsoft has followed various aspects of its products" in text


# A MediaWiki article as the site serves it today: each heading wrapped in a div.mw-heading with its edit link.
WIKI_ARTICLE = """<html><head><title>Tea - Wikipedia</title></head><body><div id="content">
<h1 id="firstHeading"><span class="mw-page-title-main">Tea</span></h1>
<div class="mw-content-ltr mw-parser-output"><p>Tea is an aromatic beverage prepared by pouring hot water
over cured leaves.</p>
<div class="mw-heading mw-heading2"><h2 id="History">History</h2><span class="mw-editsection">[edit]</span></div>
<p>Tea drinking may have begun in Yunnan.</p>
<div class="mw-heading mw-heading2"><h2 id="See_also">See also</h2></div>
<ul><li><a href="/wiki/Coffee">Coffee</a></li><li><a href="/wiki/Tea_culture">Tea culture</a></li></ul>
<div class="mw-heading mw-heading2"><h2 id="References">  REFERENCES </h2></div>
<div class="mw-heading mw-heading3"><h3 id="Citations">Citations</h3></div>
<div class="reflist"><ol class="references"><li id="cite_note-1"><span class="mw-cite-backlink">^</span>
<cite>"Tea". Oxford English Dictionary. Retrieved 3 May 2020.</cite></li></ol></div>
<div class="mw-heading mw-heading2"><h2 id="Further_reading">Further reading</h2></div>
<ul><li><cite>Mair, Victor H. (2009). The True History of Tea. Thames &amp; Hudson.</cite></li></ul>
<div class="mw-heading mw-heading2"><h2 id="Preparation">Preparation</h2></div>
<p>Water is heated to boiling.</p>
<div class="mw-heading mw-heading3"><h3 id="Notes_on_steeping">Notes on steeping</h3></div>
<p>Green tea steeps for two minutes.</p>
<div class="mw-heading mw-heading3"><h3 id="Notes">Notes</h3></div>
<ol><li>Steeping times vary by cultivar.</li></ol>
<div class="mw-heading mw-heading3"><h3 id="Serving">Serving</h3></div>
<p>Tea is served in cups.</p>
<div class="mw-heading mw-heading2"><h2 id="External_links">External links</h2></div>
<ul><li><a href="https://www.tea.co.uk/">UK Tea Council</a></li></ul>
<div class="mw-heading mw-heading2"><h2 id="Bibliography">Bibliography</h2></div>
<ul><li><cite>Heiss, M. L. (2007). The Story of Tea.</cite></li></ul>
</div></div></body></html>"""


def test_html_trailing_link_and_citation_sections_are_dropped_up_to_the_next_heading_of_their_level(tmp_path):
    path = tmp_path / "tea.html"
    path.write_text(WIKI_ARTICLE, encoding="utf-8")
    sections = parse(path)
    text = "\n".join(s.text for s in sections)
    for dropped in ("See also", "Coffee", "Tea culture", "Citations", "Oxford English Dictionary", "Retrieved",
                    "Further reading", "True History of Tea", "Steeping times vary", "UK Tea Council",
                    "External links", "Bibliography", "Story of Tea"):
        assert dropped not in text, dropped
    # Only a heading that is exactly one of the names: "Notes on steeping" is a section like any other, and
    # the sections after a dropped one, at its level or under a kept parent, are read again.
    assert [(s.heading_path, s.text) for s in sections] == [
        (("Tea",), "Tea is an aromatic beverage prepared by pouring hot water\nover cured leaves."),
        (("Tea", "History"), "Tea drinking may have begun in Yunnan."),
        (("Tea", "Preparation"), "Water is heated to boiling."),
        (("Tea", "Preparation", "Notes on steeping"), "Green tea steeps for two minutes."),
        (("Tea", "Preparation", "Serving"), "Tea is served in cups."),
    ]


def test_html_page_titled_like_a_trailing_section_is_kept(tmp_path):
    path = tmp_path / "notes.html"
    path.write_text("<html><body><main><h1>Notes</h1><p>Meeting moved to Tuesday.</p>"
                    "<h2>References</h2><ul><li>Minutes of 3 May.</li></ul></main></body></html>", encoding="utf-8")
    assert [(s.heading_path, s.text) for s in parse(path)] == [(("Notes",), "Meeting moved to Tuesday.")]


def test_html_footnote_marks_are_dropped_and_the_sentence_kept(tmp_path):
    path = tmp_path / "page.html"
    path.write_text("<html><body><main><p>Leave is 25 days.<sup class='reference'><a href='#n1'>[18]</a></sup>"
                    " Trains are booked.<sup>[19]</sup><sup>[20]</sup> Water is H<sub>2</sub>O and x<sup>2</sup>."
                    "</p></main></body></html>", encoding="utf-8")
    [section] = parse(path)
    assert section.text == "Leave is 25 days. Trains are booked. Water is H2O and x2."


def test_text_beyond_the_character_limit_is_refused_with_the_limit(tmp_path, settings):
    settings.PARSE_MAX_CHARACTERS = 1000
    with pytest.raises(DocumentTooLarge, match=r"holds 5,\d\d\d characters of text; the limit is 1,000\. Split"):
        parse(factory.make_text(tmp_path / "big.txt", "many words " * 500))


def test_runs_without_whitespace_are_broken_up_for_the_splitter():
    text = parsing.clean_text("start " + "A" * 2500 + " end")
    assert [len(word) for word in text.split()] == [5, 1000, 1000, 500, 3]
