import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
django_application = get_asgi_application()

# Imported once Django is set up (core.uploads reads its settings when called, its models never).
from core.uploads import BodyLimitMiddleware  # noqa: E402
from documents.spaces.heartbeat import Lifespan  # noqa: E402

# Django's own handler; a body past the upload limit is refused before Django reads (and spools) it. The ASGI
# lifespan startup starts the process's embedding-space heartbeat (documents.spaces.heartbeat).
application = Lifespan(BodyLimitMiddleware(django_application))
