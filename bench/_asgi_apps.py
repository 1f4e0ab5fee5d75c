"""The two ASGI applications bench/asgi_handler.py compares, served by uvicorn from one module.

``stock``: the product's (ragsite.asgi: Django's own handler inside core.uploads.BodyLimitMiddleware).
``custom``: the former hand-written handler (bench/_asgi_custom.py), on the same settings.
"""

from _asgi_custom import SyncMiddlewareASGIHandler

from ragsite.asgi import application as stock  # sets Django up

custom = SyncMiddlewareASGIHandler()

__all__ = ["custom", "stock"]
