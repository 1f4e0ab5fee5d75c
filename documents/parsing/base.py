"""What every parser returns (sections of text with their place), and the cleaning they all share."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Control characters PostgreSQL text cannot hold (NUL) or that only confuse chunking.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Section:
    """A run of text with its place in the document: page (PDF) and heading path."""

    text: str
    page: int | None = None
    heading_path: tuple[str, ...] = ()


class Parser(Protocol):
    """A format's parser, as the registry (``PARSERS``) holds it: a file's sections, or an ``IngestError``."""

    def __call__(self, path: Path, *, max_pages: int) -> list[Section]: ...


# Runs of this many characters without whitespace (base64, minified code) are broken up, so the
# splitter never falls back to cutting character by character (slow, and meaningless chunks).
LONGEST_WORD = 1000
LONG_RUN = re.compile(rf"(\S{{{LONGEST_WORD}}})(?=\S)")


def clean_text(text: str) -> str:
    text = CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = LONG_RUN.sub(r"\1 ", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _short(error: BaseException) -> str:
    """An exception in a few words, for ``detail`` (the operators' side), never for the owner's message."""
    message = str(error).strip() or error.__class__.__name__
    return message[:300]
