"""The upload size limit, enforced while the request body streams in, not after it is stored; one wording.

``MAX_UPLOAD_BYTES`` per file, refused with ``TOO_LARGE`` wherever it is passed:
- ``BodyLimitMiddleware`` (ASGI, around Django): a request declaring more than ``request_limit`` is refused
  before its body is read, and one that passes it without declaring its length is refused as it does, so
  never more than the limit lands on disk (Django spools the whole body before any upload handler runs);
- ``UploadLimitMiddleware`` does the same check under WSGI, which has no ASGI layer;
- ``LimitedUploadHandler`` runs before Django's memory and temporary-file handlers: the moment a file passes
  the limit it is skipped (its remaining bytes are read and dropped, never kept), and its name is noted on the
  request (``oversized``) so the view answers 413 for that file;
- documents' upload service checks the size of a file given to it any other way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from core.http import error_response, json_expected
from core.text import size_text

TOO_LARGE = "The file is larger than the limit of {limit}; split it into smaller files and upload those."

# A request may carry several files (the documents page uploads a selection at once).
MAX_FILES_PER_REQUEST = 20
# Room for the multipart framing and the form's other fields.
REQUEST_OVERHEAD_BYTES = 1024 * 1024

# The ASGI interface as Django's handler types it (a scope's keys depend on its type).
Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def limit_message() -> str:
    return TOO_LARGE.format(limit=size_text(settings.MAX_UPLOAD_BYTES))


def request_limit(path: str) -> int:
    """The most bytes a request to ``path`` can need: one file for the APIs, a selection for the page."""
    files = 1 if path.startswith(("/api/", "/v1/")) else MAX_FILES_PER_REQUEST
    return settings.MAX_UPLOAD_BYTES * files + REQUEST_OVERHEAD_BYTES


def too_large_response(path: str, accept: str) -> HttpResponse:
    """413 with the limit. Rendered without a request: the ASGI layer answers before one exists."""
    return error_response(413, limit_message(), json=json_expected(path, accept))


class LimitedUploadHandler(FileUploadHandler):
    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self._noted()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        if start + len(raw_data) > settings.MAX_UPLOAD_BYTES:
            assert self.file_name is not None  # new_file named it
            self._noted().append(self.file_name)
            raise SkipFile()
        return raw_data  # on to the handler that stores it

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler builds the file

    def _noted(self) -> list[str]:
        """The request's ``oversized_uploads`` (an attribute HttpRequest does not declare), made by the first file."""
        names: list[str] = vars(self.request).setdefault("oversized_uploads", [])
        return names


def oversized(request: HttpRequest) -> list[str]:
    """Names of the files of ``request`` that were dropped for passing the limit."""
    names: list[str] = getattr(request, "oversized_uploads", [])
    return names


class UploadLimitMiddleware:
    """Under WSGI: refuse at once a request whose declared length could not be a valid upload."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > request_limit(request.path):
            return too_large_response(request.path, request.headers.get("Accept", ""))
        return self.get_response(request)


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """ASGI middleware: 413 for a body past ``request_limit``, before Django reads (and spools) it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        path, accept = scope.get("path", ""), headers.get(b"accept", b"").decode("latin-1")
        limit = request_limit(path)
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > limit:  # not read: the client may still be sending
            return await self.refuse(path, accept, send)
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:  # raised while Django reads the body, before it answers
            await self.refuse(path, accept, send)

    @staticmethod
    async def refuse(path: str, accept: str, send: Send) -> None:
        response = await sync_to_async(too_large_response)(path, accept)
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.items()]})
        await send({"type": "http.response.body", "body": response.content})
