"""What Django's debugging pages and error reports may show, and to whom."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase
from django.urls import Resolver404, resolve
from django.views.debug import SafeExceptionReporterFilter
from django.views.defaults import page_not_found

# The password of a URL: scheme://user:PASSWORD@host (a Redis URL may have no user: redis://:PASSWORD@host).
URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?=@)", re.IGNORECASE)


class UrlPasswordReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, which hides settings named like KEY, PASS, TOKEN..., and also the password inside any
    URL it shows, whatever the setting's name (REDIS_URL, CELERY_BROKER_URL, a cache's LOCATION)."""

    def cleanse_setting(self, key: int | str, value: Any) -> Any:
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str):
            return URL_PASSWORD.sub(rf"\g<head>{self.cleansed_substitute}", cleansed)
        return cleansed


class DebugNotFoundForStaffOnlyMiddleware:
    """Under DEBUG, Django answers a 404 with a page listing every URL pattern (handler404 is not called then):
    only staff see it; anyone else gets the ordinary 404 page. Without DEBUG this does nothing."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if settings.DEBUG:
            try:
                resolve(request.path_info, getattr(request, "urlconf", None))
            except Resolver404 as error:  # raised before any view runs, so process_exception never sees it
                # Who asks is read only now: a request that resolves never reads the session or the user here
                # (with the database down, its view answers the clear 503 of core.http).
                if not is_staff(request):
                    return page_not_found(request, error)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponseBase | None:
        if isinstance(exception, Http404) and settings.DEBUG and not is_staff(request):
            return page_not_found(request, exception)
        return None


def is_staff(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    return bool(user and user.is_active and user.is_staff)
