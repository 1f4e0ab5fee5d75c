"""Embedding spaces: one per embedding model, each collection searching its active one (issue 14).

- ``storage``: one partition of the ChunkVector table per space, with its HNSW indexes.
- ``registry``: the installation's default space (from ``EMBEDDING_*``), and the backend of any space.
"""

from documents.spaces.registry import backend_for, can_embed, default_space

__all__ = ["backend_for", "can_embed", "default_space"]
