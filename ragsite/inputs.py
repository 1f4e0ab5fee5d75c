"""Values read from requests: ids, and text that PostgreSQL can store.

Python's ``str.isdigit()`` and regex ``\\d`` accept every Unicode digit: ``"²".isdigit()`` is true but
``int("²")`` raises, and ``int("٣")`` is 3, which would make ``rag-collection-٣`` an alias of collection 3.
Every id that comes from a URL's query, a form, a JSON body or a model name goes through ``parse_id``.
"""

from __future__ import annotations

import re

ID = re.compile(r"[0-9]{1,19}")  # ASCII digits only; a bigint has at most 19
MAX_ID = 2**63 - 1  # PostgreSQL's bigint
SURROGATES = re.compile("[\ud800-\udfff]")


def parse_id(value: object) -> int | None:
    """The id ``value`` spells in ASCII digits (``"42"`` → 42), or None for anything else.

    No sign, no spaces, no other digits: ``"²"``, ``"٣"``, ``"３"``, ``"-1"``, ``" 7"`` and ids past a
    bigint are not ids (they find nothing rather than fail).
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_ID else None
    if not ID.fullmatch(value):
        return None
    number = int(value)
    return number if number <= MAX_ID else None


def without_surrogates(text: str) -> str:
    """``text`` without lone surrogates (``"\\ud800"`` in JSON), which cannot be encoded to UTF-8.

    A valid pair in JSON (``"\\ud83d\\ude00"``) is decoded to one character, so what remains is never part
    of a character.
    """
    return SURROGATES.sub("", text)
