"""The two ASGI applications bench/asgi_handler.py compares, served by uvicorn from one module.

``stock``: Django's own handler (``get_asgi_application()``) inside core.uploads.BodyLimitMiddleware, the product's
entry point until 2026-12-01. ``custom``: the product's (ragsite.asgi: core.asgi.OneHopASGIHandler inside the same
middleware), on the same settings.
"""

from django.core.handlers.asgi import ASGIHandler

from core.uploads import BodyLimitMiddleware
from ragsite.asgi import application as custom  # sets Django up

stock = BodyLimitMiddleware(ASGIHandler())

__all__ = ["custom", "stock"]
