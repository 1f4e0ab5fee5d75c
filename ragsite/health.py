"""/healthz and /readyz answer whatever the Host header and the scheme.

Probes call it by address over plain HTTP: docker compose's web healthcheck asks
``http://127.0.0.1:8000/healthz`` inside the container, load balancers ask the container's IP. Through the
normal middleware such a request is refused with 400 when ``ALLOWED_HOSTS`` names the real domain
(``CommonMiddleware`` validates the Host) and redirected to HTTPS when ``SECURE_SSL_REDIRECT`` is on
(``SecurityMiddleware``), so a healthy site would look dead. Host validation protects the absolute URLs
a response builds from the Host; the health report builds none and says nothing a public page would not,
so this middleware, first in the chain, answers it before either check.
"""

from ragsite.views import healthz, readyz

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"


class HealthCheckMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info == HEALTH_PATH:
            return healthz(request)
        if request.path_info == READY_PATH:
            return readyz(request)
        return self.get_response(request)
