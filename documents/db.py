"""Database helpers shared by the code that reads and writes vectors with raw SQL."""

from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from pgvector.psycopg import register_vector

from core import replicas


def vector_connection(user: Any = None) -> BaseDatabaseWrapper:
    """A connection that sends numpy arrays as pgvector values: the primary, or for ``user``'s search a replica.

    ``user`` marks a read-only search made for that user (search, chat retrieval): it runs on the replica
    ``core.replicas.read_alias`` picks — one that is healthy and has replayed the user's own last write — or
    on the primary. Without ``user`` (writes, and every caller that does not say) it is the primary, as
    without replicas. A replica whose connection cannot be made now is skipped until its next check.

    psycopg copies its type adapters into each cursor when the cursor is created, so the vector types are
    registered on the connection (once per connection) before that.
    """
    connection = connections[DEFAULT_DB_ALIAS] if user is None else replicas.read_connection(user)
    connection.ensure_connection()
    raw = connection.connection
    if raw.adapters.types.get("vector") is None:
        register_vector(raw)
    return connection


def vector_cursor(user: Any = None) -> CursorWrapper:
    """A cursor of ``vector_connection(user)``."""
    return vector_connection(user).cursor()
