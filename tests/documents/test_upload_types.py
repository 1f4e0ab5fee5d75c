"""Unsupported file types are refused at upload (page, API, admin) with what is supported, never stored.

The rule is ``documents.parsing.check_supported`` (name and first bytes); ``documents.services.check_upload``
calls it for every entry point.
"""

from __future__ import annotations

import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from core.models import ApiToken
from documents.exceptions import SUPPORTED_FORMATS, UnsupportedFileType
from documents.models import Document
from documents.parsing import check_supported
from tests import documents_factory as factory

OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504  # the header of every .doc, .xls and .ppt
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))


def zipped(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, "<x/>")
    return buffer.getvalue()


REFUSED = {
    "legacy Word": ("minutes.doc", OLE2, "an older Word document (.doc)"),
    "legacy Office, renamed": ("minutes.txt", OLE2, "an older Microsoft Office file"),
    "password-protected .docx": ("contract.docx", OLE2, "password-protected; open it, remove the password"),
    "spreadsheet": ("budget.xlsx", zipped("[Content_Types].xml", "xl/workbook.xml"), "a spreadsheet"),
    "spreadsheet, no name": ("budget", zipped("[Content_Types].xml", "xl/workbook.xml"), "a spreadsheet"),
    "presentation": ("deck.pptx", zipped("[Content_Types].xml", "ppt/presentation.xml"), "a presentation"),
    "zip archive": ("docs.zip", zipped("a.txt"), "an archive"),
    "image": ("scan.png", PNG, "an image"),
    "image named .pdf": ("scan.pdf", PNG, "an image"),
    "executable": ("setup.exe", b"MZ\x90\x00\x03\x00\x00\x00" + bytes(200), "a program"),
    "ELF named .txt": ("notes.txt", b"\x7fELF\x02\x01\x01\x00" + bytes(200), "a program"),
    "gzip": ("notes.txt.gz", b"\x1f\x8b\x08\x00" + bytes(100), "an archive"),
    "video": ("talk.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(100), "audio or video"),
    "rich text": ("letter.rtf", b"{\\rtf1\\ansi Hello}", "a document format other than PDF"),
    "by name only": ("photo.heic", b"", ""),  # empty: passes here, fails as empty
    "text named .pdf": ("report.pdf", b"Just words.", "named .pdf but is not a PDF"),
    # The README: "a spreadsheet, … a program" is refused — an export in CSV too, and a program's source.
    "CSV export": ("table.csv", b"name,amount\nrent,1200\n", "a spreadsheet (.csv, .tsv)"),
    "TSV export": ("table.tsv", b"name\tamount\nrent\t1200\n", "a spreadsheet (.csv, .tsv)"),
    "Python program": ("script.py", b"print('MZ')\n", "a program's source code"),
    "JavaScript program": ("app.js", b"console.log('hi');\n", "a program's source code"),
}


@pytest.mark.parametrize("case", [c for c in REFUSED if REFUSED[c][2]])
def test_unsupported_types_are_refused_by_name_and_content(case):
    name, head, what = REFUSED[case]
    with pytest.raises(UnsupportedFileType) as caught:
        check_supported(name=name, head=head)
    assert what in str(caught.value) and str(caught.value).endswith(f"Supported formats: {SUPPORTED_FORMATS}.")


@pytest.mark.parametrize("name, head", [
    ("notes.json", b'{"a": 1}'), ("print-MZ.txt", b"print('MZ')"), ("Makefile", b"all:\n\techo hi"),
    ("BMW report.txt", b"BMW sales rose."), ("MZ notes", b"MZ is the opening of a note."),
    ("renamed.txt", b"%PDF-1.7\n..."), ("report", zipped("[Content_Types].xml", "word/document.xml")),
    ("utf16.txt", "Grüße".encode("utf-16")), ("empty.doc", b""),
])
def test_documents_of_supported_types_pass(name, head):
    check_supported(name=name, head=head)


@pytest.mark.django_db
def test_the_api_refuses_a_legacy_doc_with_415_and_stores_nothing(client, user):
    raw = ApiToken.issue(user=user)[1]
    response = client.post("/api/v1/documents", {"file": SimpleUploadedFile("minutes.doc", OLE2)},
                           HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 415
    assert "older Word document" in response.json()["detail"] and SUPPORTED_FORMATS in response.json()["detail"]
    assert Document.objects.count() == 0


@pytest.mark.django_db
def test_the_page_refuses_a_spreadsheet_and_keeps_the_others(client, user):
    client.force_login(user)
    files = [SimpleUploadedFile("budget.xlsx", zipped("[Content_Types].xml", "xl/workbook.xml")),
             SimpleUploadedFile("notes.txt", b"Plain notes.")]
    response = client.post(reverse("documents:list"), {"files": files}, HTTP_ACCEPT="application/json")
    results = {result["name"]: result for result in response.json()["results"]}
    assert not results["budget.xlsx"]["ok"] and "a spreadsheet" in results["budget.xlsx"]["detail"]
    assert results["notes.txt"]["ok"]
    assert list(Document.objects.values_list("original_filename", flat=True)) == ["notes.txt"]


@pytest.mark.django_db
def test_the_page_refuses_a_program_and_a_csv_export_with_the_supported_formats(client, user):
    client.force_login(user)
    files = [SimpleUploadedFile("script.py", b"print('hello')\n"), SimpleUploadedFile("table.csv", b"a,b\n1,2\n"),
             SimpleUploadedFile("notes.md", b"# Notes\n\nPlain notes.")]
    response = client.post(reverse("documents:list"), {"files": files}, HTTP_ACCEPT="application/json")
    results = {result["name"]: result for result in response.json()["results"]}
    assert not results["script.py"]["ok"] and "a program's source code" in results["script.py"]["detail"]
    assert not results["table.csv"]["ok"] and "a spreadsheet" in results["table.csv"]["detail"]
    for refused in ("script.py", "table.csv"):
        assert results[refused]["detail"].endswith(f"Supported formats: {SUPPORTED_FORMATS}.")
    assert results["notes.md"]["ok"]
    assert list(Document.objects.values_list("original_filename", flat=True)) == ["notes.md"]


@pytest.mark.django_db
def test_the_admin_refuses_an_image(admin_client, collection):
    response = admin_client.post(reverse("admin:documents_document_add"), {
        "collection": collection.pk, "file": SimpleUploadedFile("scan.png", PNG), "title": "", "metadata": "{}",
    })
    assert response.status_code == 200 and "This file is an image" in response.content.decode()
    assert Document.objects.count() == 0


@pytest.mark.django_db
def test_a_supported_file_is_still_accepted(client, user, tmp_path):
    raw = ApiToken.issue(user=user)[1]
    path = factory.make_pdf(tmp_path / "a.pdf", ["Text."])
    response = client.post("/api/v1/documents", {"file": SimpleUploadedFile("a.pdf", path.read_bytes())},
                           HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 202
