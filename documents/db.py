"""Database helpers shared by the code that reads and writes vectors with raw SQL."""

from django.db import connection
from django.db.backends.utils import CursorWrapper
from pgvector.psycopg import register_vector


def vector_cursor() -> CursorWrapper:
    """A cursor on Django's connection that sends numpy arrays as pgvector values.

    psycopg copies its type adapters into each cursor when the cursor is created, so the
    vector types are registered on the connection (once per connection) before that.
    """
    connection.ensure_connection()
    raw = connection.connection
    if raw.adapters.types.get("vector") is None:
        register_vector(raw)
    return connection.cursor()
