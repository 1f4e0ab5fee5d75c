"""Split parsed sections into token-sized chunks with langchain-text-splitters."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import tiktoken
from django.conf import settings
from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

from documents.parsing import Section

# cl100k_base is the tokenizer of OpenAI's embedding models; for local models it is a close,
# fast proxy of the sizes that matter (model context, prompt budget).
ENCODING = "cl100k_base"


@dataclass(frozen=True)
class ChunkDraft:
    ordinal: int
    text: str
    page: int | None
    heading: str
    char_start: int
    char_end: int
    token_count: int

    @property
    def embedding_text(self) -> str:
        """The text that is embedded: the heading path gives a chunk the context it lacks."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


@cache
def encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    return len(encoding().encode(text, disallowed_special=()))


@cache
def splitter(chunk_size: int, chunk_overlap: int) -> RecursiveCharacterTextSplitter:
    # Markdown separators first try fences, headings and paragraphs, so a code block is only
    # split mid-line when it alone is larger than a chunk.
    return RecursiveCharacterTextSplitter.from_tiktoken_encoder(
        encoding_name=ENCODING,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        separators=RecursiveCharacterTextSplitter.get_separators_for_language(Language.MARKDOWN),
        strip_whitespace=True,
    )


def chunk_sections(
    sections: Iterable[Section], *, chunk_size: int | None = None, chunk_overlap: int | None = None
) -> list[ChunkDraft]:
    """Chunks in document order; offsets index the sections joined by blank lines."""
    size = chunk_size or settings.CHUNK_SIZE_TOKENS
    overlap = min(chunk_overlap if chunk_overlap is not None else settings.CHUNK_OVERLAP_TOKENS, size // 2)
    text_splitter = splitter(size, overlap)
    drafts: list[ChunkDraft] = []
    base = 0
    for section in sections:
        heading = " > ".join(section.heading_path)
        cursor = 0
        for piece in text_splitter.split_text(section.text):
            # Where the piece sits in the section: the first occurrence after the previous
            # piece's start (overlapping pieces begin before the previous one ends).
            found = section.text.find(piece, cursor)
            if found < 0:
                found = max(section.text.find(piece), 0)
            cursor = found + 1
            start = base + found
            drafts.append(
                ChunkDraft(
                    ordinal=len(drafts),
                    text=piece,
                    page=section.page,
                    heading=heading,
                    char_start=start,
                    char_end=start + len(piece),
                    token_count=count_tokens(piece),
                )
            )
        base += len(section.text) + 2
    return drafts
