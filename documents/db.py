"""Database helpers shared by the code that reads and writes vectors with raw SQL."""

from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.backends.utils import CursorWrapper
from pgvector.psycopg import register_vector

from core import replicas


def vector_cursor(user: Any = None) -> CursorWrapper:
    """A cursor that sends numpy arrays as pgvector values: on the primary, or for ``user``'s search on a replica.

    ``user`` marks a read-only search made for that user (search, chat retrieval): it runs on the replica
    ``core.replicas.read_alias`` picks — one that is healthy and has replayed the user's own last write — or
    on the primary. Without ``user`` (writes, and every caller that does not say) it is the primary, as
    without replicas. A replica whose connection cannot be made now is skipped until its next check.

    psycopg copies its type adapters into each cursor when the cursor is created, so the vector types are
    registered on the connection (once per connection) before that.
    """
    alias = DEFAULT_DB_ALIAS if user is None else replicas.read_alias(user)
    connection = connections[alias]
    if alias != DEFAULT_DB_ALIAS:
        replicas.close_if_dead(connection)
        try:
            connection.ensure_connection()
        except DatabaseError as error:
            replicas.mark_down(alias, f"does not answer ({str(error).strip().splitlines()[0]})")
            connection = connections[DEFAULT_DB_ALIAS]
    connection.ensure_connection()
    raw = connection.connection
    if raw.adapters.types.get("vector") is None:
        register_vector(raw)
    return connection.cursor()
