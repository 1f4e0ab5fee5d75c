"""Split parsed sections into chunks sized in the embedding model's own tokens (langchain-text-splitters).

Sizes are counted in the word pieces of the local model's tokenizer (all-MiniLM-L6-v2's tokenizer.json,
through the ``tokenizers`` library; kept in this repository, so nothing downloads). A chunk never holds
more than the model reads: 256 word pieces with [CLS] and [SEP], the heading path included when it fits.
For OpenAI's embedding models (8191 tokens) the same counts are a safe over-estimate of their tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

from documents import embeddings
from documents.parsing import Section

SPECIAL_TOKENS = 2  # [CLS] and [SEP], added to every text the model reads
OPENAI_MAX_TOKENS = 8191


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
        return embedding_text(self.heading, self.text)


def embedding_text(heading: str, text: str) -> str:
    """The text that is embedded: the heading path gives a chunk the context it lacks.

    Also what a re-embedding into another space reads back from a stored chunk (documents.spaces.tasks).
    """
    return f"{heading}\n{text}" if heading else text


@lru_cache(maxsize=8192)
def count_tokens(text: str) -> int:
    """Word pieces of the embedding model's tokenizer, without [CLS] and [SEP].

    Cached: the splitter counts every word and separator it merges (128k counts for the 693 chunks of 300
    SciFact abstracts, most of them of words seen before), which was 1.0 s of the document's chunking."""
    return len(embeddings.local_tokenizer().encode(embeddings.tokenizable(text), add_special_tokens=False).ids)


def max_chunk_tokens() -> int:
    """The most tokens a chunk's embedded text may have: what the embedding model reads."""
    limit = OPENAI_MAX_TOKENS if embeddings.backend_choice() == "openai" else embeddings.LOCAL_MODEL_MAX_TOKENS
    return limit - SPECIAL_TOKENS


@lru_cache(maxsize=64)
def splitter(chunk_size: int, chunk_overlap: int) -> RecursiveCharacterTextSplitter:
    # Markdown separators first try fences, headings and paragraphs, so a code block is only
    # split mid-line when it alone is larger than a chunk.
    return RecursiveCharacterTextSplitter(
        length_function=count_tokens,
        chunk_size=chunk_size,
        chunk_overlap=min(chunk_overlap, chunk_size // 2),
        separators=RecursiveCharacterTextSplitter.get_separators_for_language(Language.MARKDOWN),
        keep_separator=True,
        strip_whitespace=True,
    )


def _within(piece: str, budget: int) -> list[str]:
    """``piece``, cut at token boundaries if it is over ``budget`` (the splitter sums the counts of its
    parts, which can differ from the count of the joined text by a word piece or two)."""
    encoding = embeddings.local_tokenizer().encode(embeddings.tokenizable(piece), add_special_tokens=False)
    if len(encoding.ids) <= budget:
        return [piece]
    offsets = encoding.offsets
    parts = []
    for first in range(0, len(offsets), budget):
        last = min(first + budget, len(offsets)) - 1
        parts.append(piece[offsets[first][0] : offsets[last][1]].strip())
    return [part for part in parts if part]


# A piece of at most this many word pieces on one line (a title, a heading, a caption) is no passage of its
# own: the splitter leaves it alone when the paragraph after it is larger than a chunk ("Title\n\n<abstract>").
SHORT_LINE_TOKENS = 64


def _join_short_lines(text: str, pieces: list[str], budget: int, overlap: int) -> list[str]:
    """``pieces`` of ``text`` with each short one-line piece joined to the piece after it.

    When both do not fit ``budget`` together, the next piece is split again to leave room for the short
    line; its first part goes with the line, and its others follow unless the piece after them overlaps
    the joined one (the splitter's overlap already holds the rest). Every piece stays a slice of ``text``.
    """
    joined: list[str] = []
    index, cursor = 0, 0
    while index < len(pieces):
        piece = pieces[index]
        start = text.find(piece, cursor)
        merged, parts = "", []
        if start >= 0 and index + 1 < len(pieces) and "\n" not in piece and count_tokens(piece) <= SHORT_LINE_TOKENS:
            following = pieces[index + 1]
            next_start = text.find(following, start + len(piece))  # < 0: it overlaps the line, so holds it
            if next_start >= 0:
                room = budget - count_tokens(text[start:next_start]) - 2
                if count_tokens(text[start : next_start + len(following)]) <= budget:
                    parts = [following]
                elif room >= budget // 4:
                    parts = splitter(room, overlap).split_text(following)
                offset = following.find(parts[0]) if parts else -1
                merged = text[start : next_start + offset + len(parts[0])] if offset >= 0 else ""
        if not merged or count_tokens(merged) > budget:
            joined.append(piece)
            cursor = start + 1 if start >= 0 else cursor
            index += 1
            continue
        joined.append(merged)
        after = text.find(pieces[index + 2], next_start) if index + 2 < len(pieces) else -1
        if not 0 <= after <= start + len(merged):  # unless the piece after overlaps the merged one: no gap
            joined.extend(parts[1:])
        cursor, index = start + 1, index + 2
    return joined


def chunk_sections(
    sections: Iterable[Section], *, chunk_size: int | None = None, chunk_overlap: int | None = None
) -> list[ChunkDraft]:
    """Chunks in document order; offsets index the sections joined by blank lines.

    A chunk's text and heading path together fit what the embedding model reads; a heading path so
    long that it would leave less than half a chunk for the text is left to the model's truncation.
    """
    limit = max_chunk_tokens()
    size = min(chunk_size or settings.CHUNK_SIZE_TOKENS, limit)
    overlap = chunk_overlap if chunk_overlap is not None else settings.CHUNK_OVERLAP_TOKENS
    drafts: list[ChunkDraft] = []
    base = 0
    for section in sections:
        heading = " > ".join(section.heading_path)
        budget = min(size, max(limit - count_tokens(heading), size // 2)) if heading else size
        cursor = 0
        pieces = splitter(budget, overlap).split_text(section.text)
        pieces = [part for piece in pieces for part in _within(piece, budget)]
        pieces = _join_short_lines(section.text, pieces, budget, overlap)
        for piece in pieces:
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
