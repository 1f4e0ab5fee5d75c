import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
django.setup(set_prefix=False)  # as get_asgi_application() does

from ragsite.middleware import SyncMiddlewareASGIHandler  # noqa: E402

application = SyncMiddlewareASGIHandler()
