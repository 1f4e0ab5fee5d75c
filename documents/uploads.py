"""Upload limits enforced while the request body streams in, not after it is stored.

``LimitedUploadHandler`` runs before Django's memory and temporary-file handlers: the moment a
file passes ``MAX_UPLOAD_BYTES`` it is skipped (its remaining bytes are read and dropped, never
kept), and its name is noted on the request so the view can answer 413 with the limit.
``UploadLimitMiddleware`` refuses at once a request whose declared length could not be valid;
under ASGI the server (``ragsite.middleware.SyncMiddlewareASGIHandler``) does the same before it reads
the body, and stops reading one that passes ``request_limit`` without declaring its length.
"""

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string

from documents.exceptions import FileTooLarge

# A request may carry several files (the documents page uploads a selection at once).
MAX_FILES_PER_REQUEST = 20


def limit_message(size: int | None = None) -> str:
    from documents.services import _size

    limit = _size(settings.MAX_UPLOAD_BYTES)
    return FileTooLarge.SIZE.format(size=_size(size), limit=limit) if size else FileTooLarge.OVER.format(limit=limit)


class LimitedUploadHandler(FileUploadHandler):
    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        if not hasattr(self.request, "oversized_uploads"):
            self.request.oversized_uploads = []

    def receive_data_chunk(self, raw_data, start):
        if start + len(raw_data) > settings.MAX_UPLOAD_BYTES:
            self.request.oversized_uploads.append(self.file_name)
            raise SkipFile()
        return raw_data  # on to the handler that stores it

    def file_complete(self, file_size):
        return None  # the next handler builds the file


def oversized(request) -> list[str]:
    """Names of the files of ``request`` that were dropped for passing the limit."""
    return getattr(request, "oversized_uploads", [])


# Room for the multipart framing and the form's other fields.
REQUEST_OVERHEAD_BYTES = 1024 * 1024


def request_limit(path: str) -> int:
    """The most bytes a request to ``path`` can need: one file for the APIs, a selection for the page."""
    files = 1 if path.startswith(("/api/", "/v1/")) else MAX_FILES_PER_REQUEST
    return settings.MAX_UPLOAD_BYTES * files + REQUEST_OVERHEAD_BYTES


def too_large_response(path: str, accept: str, length: int | None) -> HttpResponse:
    """413 with the limit: JSON for the APIs and scripts, a page for people."""
    message = str(FileTooLarge(limit_message(length)))
    if path.startswith(("/api/", "/v1/")) or "application/json" in accept:
        return JsonResponse({"detail": message}, status=413)
    # Without the request: the server answers this before a request object exists.
    return HttpResponse(render_to_string("413.html", {"message": message}), status=413)


class UploadLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > request_limit(request.path):
            return too_large_response(request.path, request.headers.get("Accept", ""), length)
        return self.get_response(request)
