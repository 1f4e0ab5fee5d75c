"""Turn a lost database into a clear 503 instead of a stack trace."""

from django.db import OperationalError
from django.http import JsonResponse
from django.shortcuts import render


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, OperationalError):
            return None
        message = "The database is not reachable right now. Please try again in a moment."
        if request.path.startswith(("/api/", "/v1/", "/healthz")):
            return JsonResponse({"detail": message}, status=503)
        return render(request, "503.html", {"message": message}, status=503)
