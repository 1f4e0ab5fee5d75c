"""Search: the one way to read chunks, with who may read them decided inside the SQL.

The public functions are here; the modules behind them are ``filters`` (what a search is narrowed to),
``sql`` (the statements, and the one readable-collections predicate), ``query`` (running them: vector,
BM25 and hybrid), ``indexes`` (HNSW or IVFFlat per distance), ``evaluation`` (nDCG, recall, MRR on labelled
queries) and ``api`` (``/api/v1/search``).
"""

from documents.search.filters import Filters, UnknownCollection, chunk_predicate
from documents.search.query import MODES, Hit, search

__all__ = ["MODES", "Filters", "Hit", "UnknownCollection", "chunk_predicate", "search"]
