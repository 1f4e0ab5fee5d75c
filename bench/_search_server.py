"""The app's ASGI application for bench/search.py, with query embedding looked up, not computed.

bench/search.py serves this with uvicorn (as ``make run`` serves ``ragsite.asgi``) and times
GET /api/v1/search. So that the figure is HTTP + Django + SQL, comparable with the bare SQL,
``embed_query`` answers from the vectors the benchmark precomputed for its query texts
(``BENCH_QUERY_VECTORS``: an .npz of ``texts`` and ``vectors``); the benchmark times the real
model's query embedding separately. Search embeds with the backend of each collection's embedding space
(documents.spaces.backend_for, which builds it with ``embeddings.build_backend``): that is what is replaced.
Everything else is the product's code path.
"""

import os

import numpy as np

from documents import embeddings
from ragsite.asgi import application  # noqa: F401  (sets Django up; uvicorn serves it)


class LookupBackend(embeddings.EmbeddingBackend):
    def __init__(self, model_name: str, texts: list[str], vectors: np.ndarray):
        self.model_name = model_name
        self.dimensions = vectors.shape[1]
        self.table = dict(zip(texts, vectors, strict=True))

    def embed_documents(self, texts):
        return np.stack([self.table[text] for text in texts])


_table = np.load(os.environ["BENCH_QUERY_VECTORS"])
_backend = LookupBackend(os.environ["BENCH_MODEL_NAME"], _table["texts"].tolist(), _table["vectors"])
embeddings.build_backend = lambda *args, **kwargs: _backend

# bench/request_path.py: Django's stock ASGI handler on the same settings and lookup backend, the product's peer.
from django.core.handlers.asgi import ASGIHandler  # noqa: E402

from core.uploads import BodyLimitMiddleware  # noqa: E402

django_stock = BodyLimitMiddleware(ASGIHandler())
