import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
django.setup(set_prefix=False)  # as get_asgi_application() does

# Imported once Django is set up (core.uploads reads its settings when called, its models never).
from core.asgi import OneHopASGIHandler  # noqa: E402
from core.uploads import BodyLimitMiddleware  # noqa: E402
from documents.spaces.heartbeat import Lifespan  # noqa: E402

# Django's handler with a request's sync work in one hop (core.asgi: measured faster than the stock one); a body past
# the upload limit is refused before Django reads (and spools) it. The ASGI lifespan startup starts the process's
# embedding-space heartbeat (documents.spaces.heartbeat).
application = Lifespan(BodyLimitMiddleware(OneHopASGIHandler()))
