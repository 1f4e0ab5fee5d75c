"""Headers the whole site shares (the Content-Security-Policy is django-csp's, configured in settings)."""

from __future__ import annotations

from django.utils.cache import add_never_cache_headers
from django.utils.functional import SimpleLazyObject, empty


class NoStoreWhenSignedInMiddleware:
    """What a signed-in user is shown is kept by no browser cache or proxy: ``Cache-Control: no-store``.

    After signing out on a shared machine, the back button or a proxy must not show the documents,
    answers or API results of the one before. A response's content depends on who asks only if the
    request's user was looked up (pages, the API's bearer token); one that never asked (static files,
    health, an anonymous page with no session) is left alone, and no session is read just to decide.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if isinstance(user, SimpleLazyObject) and user._wrapped is empty:
            return response  # never looked up: nothing in the response depends on it
        if user is not None and user.is_authenticated:
            add_never_cache_headers(response)
        return response
