"""Real documents generated for tests, so the suite needs no files but its own.

PDFs are written by fpdf2 (encrypted ones by pypdf), Word files by python-docx; every one is a
genuine file of its kind that the production parsers read exactly as they would an upload.
"""

from __future__ import annotations

import io
from pathlib import Path


def make_pdf(path: Path, pages: list[str]) -> Path:
    """A text PDF, one string per page."""
    buffer = io.BytesIO()
    make_pdf_bytes(buffer, pages)
    path.write_bytes(buffer.getvalue())
    return path


def make_encrypted_pdf(path: Path, password: str = "s3cret", algorithm: str = "AES-256") -> Path:
    """A PDF encrypted as current software does (AES-256); with ``password=""`` anyone may open it
    (only permissions are set), otherwise it opens only with the password."""
    from pypdf import PdfReader, PdfWriter

    plain = io.BytesIO()
    make_pdf_bytes(plain, ["Confidential salary bands for every team."])
    writer = PdfWriter(clone_from=PdfReader(plain))
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm=algorithm)
    with open(path, "wb") as handle:
        writer.write(handle)
    return path


def make_pdf_bytes(target: io.BytesIO, pages: list[str]) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    target.write(pdf.output())
    target.seek(0)


def make_blank_pdf(path: Path, pages: int = 2) -> Path:
    """A PDF of empty pages: no text and no pictures."""
    from fpdf import FPDF

    pdf = FPDF()
    for _ in range(pages):
        pdf.add_page()
    pdf.output(str(path))
    return path


def make_image_only_pdf(path: Path, pages: int = 2) -> Path:
    """A 'scanned' PDF: each page is a picture of text, with no text layer."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw

    pdf = FPDF()
    for number in range(pages):
        image = Image.new("RGB", (600, 800), "white")
        draw = ImageDraw.Draw(image)
        for line in range(20):
            draw.text((40, 40 + line * 35), f"Scanned page {number + 1}, line {line + 1}", fill="black")
        pdf.add_page()
        pdf.image(image, x=10, y=10, w=190)
    pdf.output(str(path))
    return path


def make_docx(
    path: Path, title: str, sections: list[tuple[str, list[str]]], table: list[list[str]] | None = None
) -> Path:
    """A Word document: a title, then (heading, paragraphs) sections, then an optional table."""
    import docx

    document = docx.Document()
    document.add_heading(title, level=1)
    for heading, paragraphs in sections:
        document.add_heading(heading, level=2)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    document.save(str(path))
    return path


def make_docx_with_malformed_table(path: Path) -> Path:
    """A Word document whose table grid is inconsistent, as some converters write them: the first row
    lacks its second cell while the row below continues (``vMerge``) a cell there. Word shows it;
    python-docx raises "no `tc` element at grid_offset=1" when it lays the table out."""
    import docx
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn

    document = docx.Document()
    document.add_heading("Travel policy", level=1)
    document.add_paragraph("Budgets per grade are in the table below.")
    table = document.add_table(rows=3, cols=2)
    for r, row in enumerate([["Grade", "Budget"], ["Junior", "1000 EUR"], ["Senior", "2000 EUR"]]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    rows = table._tbl.findall(qn("w:tr"))
    rows[0].remove(rows[0].findall(qn("w:tc"))[1])
    merge = OxmlElement("w:vMerge")
    merge.set(qn("w:val"), "continue")
    rows[1].findall(qn("w:tc"))[1].get_or_add_tcPr().append(merge)
    document.add_paragraph("Book trains over flights.")
    document.save(str(path))
    return path


def make_html(path: Path, title: str, sections: list[tuple[str, str]]) -> Path:
    """An article page with the noise real pages carry: navigation, scripts, styles, a footer."""
    body = "".join(f"<h2>{heading}</h2><p>{text}</p>" for heading, text in sections)
    path.write_text(
        f"<!DOCTYPE html><html><head><title>{title}</title><style>.x {{ color: red }}</style>"
        "<script>var tracking = 'SCRIPT-TEXT';</script></head><body>"
        "<nav><a href='/'>NAVIGATION-HOME</a> <a href='/about'>NAVIGATION-ABOUT</a></nav>"
        f"<main><h1>{title}</h1>{body}</main><footer>FOOTER-COPYRIGHT</footer></body></html>",
        encoding="utf-8",
    )
    return path


def make_markdown(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def make_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def add_text_document(user, collection, name: str, text: str, metadata: dict | None = None):
    """``text`` uploaded as ``name``.txt into ``collection`` and ingested here, not by a worker; the stored document."""
    from django.core.files.base import ContentFile

    from documents import pipeline, services

    document = services.document_create(
        owner=user, collection=collection, file=ContentFile(text.encode(), name=f"{name}.txt"),
        filename=f"{name}.txt", metadata=metadata or {}, enqueue=False,
    )
    ingested = pipeline.document_ingest(document_id=document.pk)
    assert ingested is not None, f"{name}.txt was not ingested"
    return ingested
