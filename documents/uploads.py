"""Upload limits enforced while the request body streams in, not after it is stored.

``LimitedUploadHandler`` runs before Django's memory and temporary-file handlers: the moment a
file passes ``MAX_UPLOAD_BYTES`` it is skipped (its remaining bytes are read and dropped, never
kept), and its name is noted on the request so the view can answer 413 with the limit.
``UploadLimitMiddleware`` refuses at once a request whose declared length could not be valid.
"""

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from django.http import JsonResponse
from django.shortcuts import render

from documents.exceptions import FileTooLarge

# A request may carry several files (the documents page uploads a selection at once).
MAX_FILES_PER_REQUEST = 20


def limit_message(size: int | None = None) -> str:
    from documents.ingest import _size

    limit = _size(settings.MAX_UPLOAD_BYTES)
    prefix = f"The file is {_size(size)}" if size else "The file is larger than the limit"
    return f"{prefix}; the limit is {limit} (MAX_UPLOAD_MB)."


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


class UploadLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > settings.MAX_UPLOAD_BYTES * MAX_FILES_PER_REQUEST + 1024 * 1024:
            message = str(FileTooLarge(limit_message(length)))
            if request.path.startswith(("/api/", "/v1/")) or "application/json" in request.headers.get("Accept", ""):
                return JsonResponse({"detail": message}, status=413)
            return render(request, "413.html", {"message": message}, status=413)
        return self.get_response(request)
