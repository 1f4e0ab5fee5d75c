"""Small text helpers the apps share: sizes in words, text PostgreSQL can store, a provider's own message."""

from __future__ import annotations

import re

from django.template.defaultfilters import filesizeformat

SURROGATES = re.compile("[\ud800-\udfff]")


def size_text(count: int) -> str:
    """``1048576`` -> "1.0 MB", with a plain space (filesizeformat's is a no-break one)."""
    return filesizeformat(count).replace("\xa0", " ")


def without_surrogates(text: str) -> str:
    """``text`` without lone surrogates (``"\\ud800"`` in JSON), which cannot be encoded to UTF-8.

    A valid pair in JSON (``"\\ud83d\\ude00"``) is decoded to one character, so what remains is never part
    of a character.
    """
    return SURROGATES.sub("", text)


def provider_message(error: Exception) -> str:
    """What an OpenAI-compatible server said about ``error``, short and without its final full stop.

    Its JSON body's ``message`` (or ``error.message``), else the exception's own message or text, else
    its class name; at most 200 characters, to sit inside one of our sentences.
    """
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        message = body.get("message") or (body.get("error") or {}).get("message")
        if message:
            return str(message)[:200].rstrip(".")
    return (str(getattr(error, "message", "") or error) or error.__class__.__name__)[:200].rstrip(".")
