"""Every reason a document fails or an upload is refused is a plain sentence that says what to do.

The reasons live in documents/exceptions.py (each class's ``default_message`` and its upper-case
templates); ``test_no_reason_is_written_outside_the_catalogue`` keeps it that way, so that the
enumeration here covers every one the product can produce. The library's own words go to
``detail`` (the log, ``Document.error_detail``, the admin), never into the message.
"""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from core import uploads
from documents import exceptions, pipeline, queue, services
from documents.models import Document
from tests import documents_factory as factory

ROOT = Path(__file__).resolve().parents[2]
APPS = ("documents", "chat", "audit", "core", "ragsite")

# Words of libraries, file formats' insides and configuration: an operator's vocabulary, not an owner's.
JARGON = re.compile(
    r"`|\bpypdf|pdfium|python-docx|cryptography|lxml|startxref|xref|trailer|\btc\b|grid_offset|element|cyclic|"
    r"traceback|errno|/Root|\bHTTP\b|worker|\(scanned\?\)|\butf-?8\b|codec|\bparser\b",
    re.IGNORECASE,
)
# The same, where case tells: exception names, Python's None, environment variables.
JARGON_CASED = re.compile(r"[a-z]Error\b|Exception|\bNone\b|\b[A-Z][A-Z0-9]+_[A-Z0-9_]+\b")
# A reason says what to do: one of these, as an instruction.
ACTIONS = re.compile(
    r"\b(upload|try again|try re-ingest|re-ingest|re-ingest to try again|save|split|run|check|ask|use|open|"
    r"unpack|make it)\b",
    re.IGNORECASE,
)
SAMPLES = {"count": 6000, "limit": 5000, "megabytes": 1000, "size": "60.0 MB", "what": "an image",
           "advice": "if it shows text, make it a PDF with text recognition (OCR) and upload that",
           "extension": "pdf", "collection": "Handbooks", "title": "Travel policy"}


def assert_plain(message: str) -> None:
    assert message and message[0].isupper(), message
    assert message.endswith(".") and not message.endswith(".."), message
    assert ".." not in message.replace("...", "") and ")." not in message.replace("(OCR).", ""), message
    for jargon in (JARGON, JARGON_CASED):
        assert not jargon.search(message), (jargon.search(message).group(0), message)
    assert ACTIONS.search(message), f"says nothing to do: {message}"


def _reason_classes() -> list[type[exceptions.IngestError]]:
    found, todo = [], [exceptions.IngestError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def catalogue() -> dict[str, str]:
    """Every reason, its templates filled with sample values."""
    reasons = {}
    for cls in _reason_classes():
        for name, value in vars(cls).items():
            if isinstance(value, str) and (name == "default_message" or name.isupper()):
                fields = {field for _, field, _, _ in string.Formatter().parse(value) if field}
                reasons[f"{cls.__name__}.{name}"] = value.format(**{f: SAMPLES[f] for f in fields})
    reasons["queue.interrupted_reason(1)"] = queue.interrupted_reason(1)
    reasons["queue.interrupted_reason(3)"] = queue.interrupted_reason(3)
    return reasons


def test_the_catalogue_holds_the_reasons_people_meet():
    names = set(catalogue())
    assert {"EncryptedDocument.default_message", "NoExtractableText.default_message", "NoExtractableText.BLANK",
            "CorruptDocument.PDF", "CorruptDocument.DOCX", "UnsupportedFileType.KIND", "DocumentTooLarge.PAGES",
            "FileTooLarge.OVER", "DuplicateDocument.TEMPLATE", "UnexpectedFailure.default_message"} <= names


@pytest.mark.parametrize("name", sorted(catalogue()))
def test_every_failure_reason_is_a_plain_sentence_that_says_what_to_do(name):
    assert_plain(catalogue()[name])


def test_every_refusal_of_an_unsupported_type_is_plain():
    from documents.parsing import REFUSED_EXTENSIONS

    for what, advice in REFUSED_EXTENSIONS.values():
        assert_plain(exceptions.UnsupportedFileType.KIND.format(what=what, advice=advice))


def test_the_upload_limit_messages_are_plain(settings):
    assert_plain(uploads.limit_message())


def _literal(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant | ast.JoinedStr) and not (
        isinstance(node, ast.Constant) and not isinstance(node.value, str))


def test_no_reason_is_written_outside_the_catalogue():
    """An IngestError built with a literal message, or a document failed with one, would escape the tests above."""
    names = {cls.__name__ for cls in _reason_classes()}
    offenders = []
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                message = node.args[0] if node.args else next(
                    (k.value for k in node.keywords if k.arg in ("message", "reason")), None)
                if func == "_mark_failed":
                    message = node.args[1] if len(node.args) > 1 else message
                if (func in names or func == "_mark_failed") and _literal(message):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


# ---- real bad files, end to end: the owner's message plain, the library's words kept for the operators -----------


def _damaged_pdf(folder: Path) -> Path:
    good = factory.make_pdf(folder / "good.pdf", ["Some text that will be cut off."])
    path = folder / "damaged.pdf"
    path.write_bytes(good.read_bytes()[:300])
    return path


BAD_FILES = {
    "aes-256-password.pdf": (lambda folder: factory.make_encrypted_pdf(folder / "locked.pdf"),
                             exceptions.EncryptedDocument.default_message, "password"),
    "damaged.pdf": (_damaged_pdf, exceptions.CorruptDocument.PDF, "pypdf"),
    "scan.pdf": (lambda folder: factory.make_image_only_pdf(folder / "scan.pdf"),
                 exceptions.NoExtractableText.default_message, ""),
    "blank.pdf": (lambda folder: factory.make_blank_pdf(folder / "blank.pdf"), exceptions.NoExtractableText.BLANK, ""),
    "cut.docx": (lambda folder: _cut(factory.make_docx(folder / "w.docx", "T", [("H", ["x"])]), folder / "cut.docx"),
                 exceptions.CorruptDocument.DOCX, "zip"),
}


def _cut(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes()[:400])
    return target


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_file_fails_with_a_plain_reason_and_the_detail_for_operators(name, user, collection, tmp_path):
    build, reason, detail_word = BAD_FILES[name]
    path = build(tmp_path)
    document = services.document_create(owner=user, collection=collection, enqueue=False, filename=name,
                                      file=ContentFile(path.read_bytes(), name=name))
    document = pipeline.document_ingest(document_id=document.pk)
    assert document.status == Document.Status.FAILED
    assert document.error == reason
    assert_plain(document.error)
    assert detail_word.lower() in document.error_detail.lower()


@pytest.mark.django_db
def test_an_unexpected_error_keeps_its_words_for_the_admin_only(user, collection, monkeypatch, admin_client):
    def broken(**kwargs):
        raise ValueError("no `tc` element at grid_offset=1")

    monkeypatch.setattr(pipeline, "parse_document", broken)
    document = services.document_create(owner=user, collection=collection, enqueue=False, filename="a.txt",
                                      file=ContentFile(b"words", name="a.txt"))
    document = pipeline.document_ingest(document_id=document.pk)
    assert document.error == exceptions.UnexpectedFailure.default_message
    assert document.error_detail.startswith("ValueError: no `tc` element at grid_offset=1")
    page = admin_client.get(reverse("admin:documents_document_change", args=[document.pk])).content.decode()
    assert "grid_offset=1" in page  # the operator sees it


@pytest.mark.django_db
def test_re_ingest_clears_the_detail_with_the_reason(user, collection):
    document = services.document_create(owner=user, collection=collection, enqueue=False, filename="a.txt",
                                      file=ContentFile(b"words", name="a.txt"))
    Document.objects.filter(pk=document.pk).update(status=Document.Status.FAILED, error="A reason; upload it.",
                                                   error_detail="an old reader's words")
    services.document_reingest(document=document)
    document.refresh_from_db()
    assert document.error == "" and document.error_detail == ""
