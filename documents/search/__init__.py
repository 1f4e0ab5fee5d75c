"""Search: the one way to read chunks, with who may read them decided inside the SQL.

The public functions are here; the modules behind them are ``filters`` (what a search is narrowed to),
``sql`` (the statements, and the one readable-collections predicate), ``query`` (running them: vector,
BM25 and hybrid), ``indexes`` (HNSW or IVFFlat per distance), ``evaluation`` (nDCG, recall, MRR on labelled
queries) and ``api`` (``/api/v1/search``).
"""

from documents.search.query import MODES, Filters, Hit, UnknownCollection, search

__all__ = ["MODES", "Filters", "Hit", "UnknownCollection", "search"]
