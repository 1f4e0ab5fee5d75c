"""The product's PostgreSQL backend (core.postgresql) on the embedded server under ``VAR_DIR``, started by the first
connection.

The settings name this engine when ``DATABASE_URL`` is unset. Importing them starts nothing; the first
process that connects (``make run``'s migrate, a management command that touches the database, the worker,
the web server, the test run) starts the server or attaches to the running one, and every later connection
of that process reuses its address.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.conf import settings
from django.db.backends.postgresql import client

from core.postgresql import base
from ragsite.devservices import embedded_database_url


def _fill_in_address(settings_dict: dict) -> None:
    """HOST, PORT, USER and PASSWORD of the embedded server (started if need be), in place."""
    if settings_dict.get("HOST"):
        return
    address = dj_database_url.parse(embedded_database_url(Path(settings.VAR_DIR)))
    # A socket directory comes as "?host=/path" (OPTIONS), which is the HOST.
    host = address.get("OPTIONS", {}).get("host") or address["HOST"]
    settings_dict.update(HOST=host, PORT=address["PORT"], USER=address["USER"], PASSWORD=address["PASSWORD"])


class DatabaseClient(client.DatabaseClient):
    def runshell(self, parameters):
        _fill_in_address(self.connection.settings_dict)  # dbshell reads the address without connecting
        super().runshell(parameters)


class DatabaseWrapper(base.DatabaseWrapper):
    client_class = DatabaseClient

    def get_connection_params(self):
        _fill_in_address(self.settings_dict)
        return super().get_connection_params()
