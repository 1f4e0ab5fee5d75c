"""Django's 400 handler: a form or JSON body past ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is a 413 with the limit.

Django raises ``RequestDataTooBig`` where the body is first read (the CSRF check, a view, an API's parser) and
answers it with a bare 400; this handler (``handler400`` in ragsite.urls) and both APIs' exception handlers
say instead what was too large and what the limit is.
"""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, JsonResponse
from django.template.defaultfilters import filesizeformat
from django.template.loader import render_to_string
from django.views import defaults

from ragsite.middleware import JSON_PREFIXES


def too_big_message() -> str:
    limit = filesizeformat(settings.DATA_UPLOAD_MAX_MEMORY_SIZE).replace("\xa0", " ")
    return (f"The form fields or JSON body of the request are larger than the limit of {limit}. "
            "Upload documents as files, and keep questions shorter.")


def too_big_response(request, exception: RequestDataTooBig | None = None) -> HttpResponse:
    """413 with the limit: JSON for the APIs and scripts, a page for people."""
    message = too_big_message()
    if request.path.startswith(JSON_PREFIXES) or "application/json" in request.headers.get("Accept", ""):
        return JsonResponse({"detail": message}, status=413)
    return HttpResponse(render_to_string("413.html", {"message": message}, request=request), status=413)


def bad_request(request, exception):
    if isinstance(exception, RequestDataTooBig):
        return too_big_response(request, exception)
    return defaults.bad_request(request, exception)
