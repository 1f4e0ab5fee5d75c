"""Plain text: one section, decoded whatever its encoding."""

from __future__ import annotations

from pathlib import Path

from documents.parsing.base import Section


def decode_text(data: bytes) -> str:
    """Bytes to text: BOMs, then UTF-8, then charset-normalizer's guess (Latin-1, CP-1252 …)."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    sample = data[: 1024 * 1024]  # a sample tells the encoding and keeps huge files fast
    # Western text in CP-1252 (a superset of Latin-1) has mostly ASCII letters and a few accented
    # ones; other legacy encodings read as CP-1252 turn nearly every letter into an accented one.
    western = sample.decode("cp1252", errors="replace")
    letters = [ch for ch in western if ch.isalpha()]
    accented = sum(1 for ch in letters if ord(ch) > 127)
    if letters and accented / len(letters) < 0.3 and western.count("\ufffd") <= len(western) // 1000:
        return data.decode("cp1252", errors="replace")
    from charset_normalizer import from_bytes

    best = from_bytes(sample).best()
    return data.decode(best.encoding if best is not None else "cp1252", errors="replace")


def parse_path(path: Path, *, max_pages: int) -> list[Section]:
    return [Section(text=decode_text(path.read_bytes()))]
