"""What is it? The type of a file from its first bytes and its name: refused at upload, or which parser reads it."""

from __future__ import annotations

import zipfile
from pathlib import Path

from documents.exceptions import EmptyDocument, UnsupportedFileType

KINDS = ("pdf", "docx", "html", "markdown", "text")
EXTENSIONS = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    ".log": "text",
}
CONTENT_TYPES = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
}

# How many first bytes decide (the upload check reads this much of the file, no more).
HEAD_BYTES = 8192
OFFICE_ADVICE = "save it as PDF (or as a Word .docx) and upload that copy"
OTHER_ADVICE = "upload the document as PDF, Word (.docx), HTML, Markdown or plain text"
CODE_ADVICE = "upload its documentation instead, or a Markdown document that quotes the code in a code block"
# What people often try to upload, by name: (what it is, what to do instead).
REFUSED_EXTENSIONS: dict[str, tuple[str, str]] = {
    **dict.fromkeys((".doc", ".dot", ".docm", ".wps"), ("an older Word document (.doc)", OFFICE_ADVICE)),
    **dict.fromkeys((".xls", ".xlsx", ".xlsm", ".xlsb", ".ods", ".numbers"), ("a spreadsheet", OFFICE_ADVICE)),
    **dict.fromkeys((".ppt", ".pptx", ".pps", ".ppsx", ".odp", ".key"), ("a presentation", OFFICE_ADVICE)),
    **dict.fromkeys((".odt", ".rtf", ".pages", ".wpd", ".epub", ".mobi", ".xps", ".ps", ".eps", ".msg"),
                    ("a document format other than PDF or Word (.docx)", OFFICE_ADVICE)),
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".svg", ".ico"),
                    ("an image", "if it shows text, make it a PDF with text recognition (OCR) and upload that")),
    **dict.fromkeys((".zip", ".gz", ".tgz", ".tar", ".7z", ".rar", ".bz2", ".xz", ".zst"),
                    ("an archive", "unpack it and upload the documents inside")),
    **dict.fromkeys((".exe", ".dll", ".msi", ".dmg", ".apk", ".jar", ".so", ".bin", ".iso", ".class", ".pyc"),
                    ("a program or disk image, not a document", OTHER_ADVICE)),
    **dict.fromkeys((".mp3", ".wav", ".m4a", ".flac", ".ogg", ".mp4", ".mov", ".avi", ".mkv", ".webm"),
                    ("an audio or video recording", "upload a transcript of it as a text or Word document")),
    **dict.fromkeys((".sqlite", ".db", ".mdb", ".accdb"), ("a database file", OTHER_ADVICE)),
    # Text, but not a document: a table's rows and a program's lines make passages that answer nothing.
    **dict.fromkeys((".csv", ".tsv"), ("a spreadsheet (.csv, .tsv)", OFFICE_ADVICE)),
    **dict.fromkeys((".py", ".pyw", ".ipynb", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".java", ".kt", ".scala",
                     ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".go", ".rs", ".rb", ".php", ".pl", ".swift", ".m",
                     ".r", ".lua", ".sh", ".bash", ".zsh", ".ps1", ".bat", ".cmd", ".vbs", ".sql"),
                    ("a program's source code, not a document", CODE_ADVICE)),
    "office": ("an older Microsoft Office file (.doc, .xls or .ppt)", OFFICE_ADVICE),  # by content only
}
# The same by content (magic bytes), for files whose name says nothing or lies.
MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "office"),  # OLE2: .doc, .xls, .ppt, .msg
    (b"{\\rtf", ".rtf"),
    (b"%!PS", ".ps"),
    (b"\x89PNG", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"), (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"), (b"BM", ".bmp"),
    (b"\x1f\x8b", ".gz"), (b"7z\xbc\xaf\x27\x1c", ".7z"), (b"Rar!\x1a\x07", ".rar"), (b"BZh", ".bz2"),
    (b"\xfd7zXZ\x00", ".xz"), (b"\x28\xb5\x2f\xfd", ".zst"),
    (b"\x7fELF", ".exe"), (b"MZ", ".exe"), (b"\xcf\xfa\xed\xfe", ".exe"), (b"\xce\xfa\xed\xfe", ".exe"),
    (b"\xca\xfe\xba\xbe", ".exe"), (b"\x00asm", ".exe"),
    (b"ID3", ".mp3"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"\x1aE\xdf\xa3", ".mkv"),
    (b"SQLite format 3\x00", ".sqlite"),
)


def _refuse(extension: str) -> UnsupportedFileType:
    what, advice = REFUSED_EXTENSIONS[extension]
    return UnsupportedFileType(UnsupportedFileType.KIND.format(what=what, advice=advice))


def check_supported(*, name: str, head: bytes) -> None:
    """Refuse a file no parser here reads, from its name and first bytes (``HEAD_BYTES``).

    Called on upload (``documents.services.check_upload``: refused at once, with the list of what is
    supported) and again before parsing. Content decides before the name: a PDF named .txt is read
    as a PDF, an executable named .pdf is refused. An empty file passes (it fails as empty).
    """
    extension = Path(name or "").suffix.lower()
    if not head or b"%PDF-" in head[:1024]:
        return
    if head.startswith(b"PK\x03\x04"):  # a zip: a .docx, or an Office / OpenDocument / plain archive
        if extension == ".docx" or b"word/" in head:
            return  # the parser opens the archive and says if it is no Word document
        if b"xl/" in head:
            raise _refuse(".xlsx")
        if b"ppt/" in head:
            raise _refuse(".pptx")
        if b"opendocument" in head or b"epub" in head:
            raise _refuse(".odt")
        raise _refuse(extension if extension in REFUSED_EXTENSIONS else ".zip")
    if head[4:8] == b"ftyp":  # ISO media: MP4 / QuickTime video, or a HEIC photo
        raise _refuse(".heic" if head[8:12] in (b"heic", b"heix", b"mif1") else ".mp4")
    if head.startswith(b"RIFF") and head[8:12] in (b"WAVE", b"AVI ", b"WEBP"):
        raise _refuse(".webp" if head[8:12] == b"WEBP" else ".wav")
    for magic, like in MAGIC:
        # Magic made of letters ("MZ", "BM", "ID3") also starts plain words: those need binary bytes too.
        if head.startswith(magic) and (not magic.isalnum() or not _is_text(head)):
            if like == "office" and extension in (".docx", ".docm", ".xlsx", ".xlsm", ".pptx"):
                # A password-protected .docx (.xlsx, .pptx) is stored encrypted inside this older container.
                raise UnsupportedFileType(UnsupportedFileType.PROTECTED)
            # The content says what it is; the name may only say which Office file.
            office = like == "office" and REFUSED_EXTENSIONS.get(extension, ("", ""))[1] == OFFICE_ADVICE
            raise _refuse(extension if office else like)
    if extension in (".pdf", ".docx"):  # the name promises a binary format the bytes do not have
        what = "a PDF" if extension == ".pdf" else "a Word document"
        raise UnsupportedFileType(UnsupportedFileType.MISNAMED.format(extension=extension[1:], what=what))
    if extension in REFUSED_EXTENSIONS:
        raise _refuse(extension)
    if _looks_binary(head):
        raise UnsupportedFileType()


def check_supported_upload(file) -> None:
    """``check_supported`` for an upload (a Django ``File``), which is left at its start."""
    file.seek(0)
    head = file.read(HEAD_BYTES)
    file.seek(0)
    check_supported(name=getattr(file, "name", None) or "", head=head.encode() if isinstance(head, str) else head)


def detect_kind(path: Path, filename: str = "", content_type: str = "") -> str:
    """The parser for a file, from its first bytes, then its name, then its declared type."""
    with open(path, "rb") as handle:
        head = handle.read(HEAD_BYTES)
    if not head:
        raise EmptyDocument()
    check_supported(name=filename or path.name, head=head)
    extension = EXTENSIONS.get(Path(filename or path.name).suffix.lower())
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        if extension == "docx" or _is_docx(path):
            return "docx"
        raise _refuse(".zip")
    if extension:
        return extension
    declared = CONTENT_TYPES.get((content_type or "").split(";")[0].strip().lower())
    if declared in ("html", "markdown", "text"):
        return declared
    lowered = head[:512].lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "html"
    return "text"


def _is_docx(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return "word/document.xml" in archive.namelist()
    except zipfile.BadZipFile:
        return False


def _is_text(head: bytes) -> bool:
    """No NUL bytes and valid UTF-8 (but for a character cut at the end)."""
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:
            return False
    return b"\x00" not in head


def _looks_binary(head: bytes) -> bool:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False  # UTF-16 text has NUL bytes by design
    return b"\x00" in head


# ---------------------------------------------------------------------------------------------
# Parsers (run in the guarded child process)
