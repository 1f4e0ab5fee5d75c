"""The guard: every parse of an uploaded file runs in a forked child with a memory limit and a timeout."""

from __future__ import annotations

import logging
import os
import pickle
import selectors
import signal
import time
from pathlib import Path

from documents.exceptions import (
    CorruptDocument,
    DocumentTooLarge,
    EmptyDocument,
    EncryptedDocument,
    IngestError,
    NoExtractableText,
    ParsingTimeout,
    UnsupportedFileType,
)
from documents.parsing.base import Section, _short
from documents.parsing.detect import detect_kind
from documents.parsing.registry import parse_file

logger = logging.getLogger(__name__)


def parse_file_guarded(
    *, path: Path, filename: str = "", content_type: str = "",
    timeout: float | None = None, max_memory_mb: int | None = None, max_pages: int | None = None,
) -> list[Section]:
    """Parse in a child process that is killed after ``timeout`` seconds or at its memory limit."""
    from django.conf import settings

    timeout = timeout if timeout is not None else settings.PARSE_TIMEOUT_SECONDS
    max_memory_mb = max_memory_mb if max_memory_mb is not None else settings.PARSE_MAX_MEMORY_MB
    max_pages = max_pages if max_pages is not None else settings.PARSE_MAX_PAGES
    max_characters = settings.PARSE_MAX_CHARACTERS
    kind = detect_kind(path, filename, content_type)
    if not hasattr(os, "fork"):  # not POSIX: parse in-process, unguarded
        return parse_file(path, kind, max_pages=max_pages, max_characters=max_characters)

    # A bare fork, not multiprocessing: the child starts in a millisecond with the parsers
    # imported, and runs none of the after-fork hooks libraries register with multiprocessing
    # (kombu's would close the parent's broker connections from the child).
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: parse, send the outcome, and leave without any cleanup
        os.close(read_end)
        try:
            outcome = _parse_in_child(path, kind, max_pages, max_characters, max_memory_mb)
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(outcome, pipe, protocol=pickle.HIGHEST_PROTOCOL)
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        data = _read_until_eof(read_end, timeout)
    finally:
        os.close(read_end)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    if data is None:
        raise ParsingTimeout(detail=f"stopped after PARSE_TIMEOUT_SECONDS={timeout:g}")
    if not data:
        raise DocumentTooLarge(DocumentTooLarge.MEMORY, detail=(
            f"the parser process ended without an answer: it passed PARSE_MAX_MEMORY_MB={max_memory_mb} "
            "or crashed"))
    status, payload = pickle.loads(data)
    if status == "ok":
        return [Section(text, page, tuple(heading)) for text, page, heading in payload]
    message, detail = payload
    raise ERRORS.get(status, CorruptDocument)(message, detail=detail)


ERRORS = {cls.__name__: cls for cls in (CorruptDocument, DocumentTooLarge, EmptyDocument, EncryptedDocument,
                                        NoExtractableText, UnsupportedFileType, ParsingTimeout, IngestError)}


def _read_until_eof(fd: int, timeout: float) -> bytes | None:
    """Everything written to ``fd`` until the writer closes it; None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    parts: list[bytes] = []
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                return None
            block = os.read(fd, 1 << 20)
            if not block:
                return b"".join(parts)
            parts.append(block)


def _parse_in_child(
    path: Path, kind: str, max_pages: int, max_characters: int, max_memory_mb: int
) -> tuple[str, object]:
    try:
        _limit_memory(max_memory_mb)
        sections = parse_file(path, kind, max_pages=max_pages, max_characters=max_characters)
        return "ok", [(s.text, s.page, list(s.heading_path)) for s in sections]
    except IngestError as error:
        return error.__class__.__name__, (str(error), error.detail)
    except MemoryError:
        return "DocumentTooLarge", (DocumentTooLarge.MEMORY, f"MemoryError at PARSE_MAX_MEMORY_MB={max_memory_mb}")
    except RecursionError as error:
        return "CorruptDocument", (CorruptDocument.STRUCTURE, f"RecursionError: {_short(error)}")
    except Exception as error:  # the reason travels to the parent, which marks the document
        return "CorruptDocument", (CorruptDocument.default_message, f"{error.__class__.__name__}: {_short(error)}")


def _limit_memory(max_memory_mb: int) -> None:
    """Cap the child's address space at what it inherited plus ``max_memory_mb``."""
    try:
        import resource

        with open("/proc/self/statm") as statm:
            inherited = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = inherited + max_memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, OSError, ValueError):
        logger.warning("cannot limit the parser's memory on this system")
