"""ragsite/settings.py's replica settings (core.replicas): what DATABASE_REPLICA_URLS makes, and nothing without it.

The settings are imported in a fresh process, as manage.py and the web server import them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

SHOW_ROUTING = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "keys = ('HOST', 'PORT', 'NAME', 'OPTIONS', 'TEST'); "
    "print(json.dumps([s.DATABASE_REPLICAS, {a: [s.DATABASES[a][k] for k in keys] for a in s.DATABASE_REPLICAS}, "
    "s.DATABASE_ROUTERS, 'core.replicas.ReadYourWritesMiddleware' in s.MIDDLEWARE]))"
)


def routing_settings(tmp_path, **env) -> list:
    """DATABASE_REPLICAS, each replica's address and options, the routers, whether the middleware is on."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REPLICA_"))}
    base.update(RAG_VAR_DIR=str(tmp_path / "var"), DEBUG="true", DATABASE_URL="postgresql://app:pw@127.0.0.1:1/rag")
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", SHOW_ROUTING], cwd=root, env={**base, **env}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_database_replica_urls_make_mirrored_aliases_the_router_and_the_middleware(tmp_path):
    urls = "postgresql://app:pw@10.0.0.2:5432/rag, postgresql://app:pw@10.0.0.3/rag?connect_timeout=5"
    aliases, replica, routers, middleware = routing_settings(tmp_path, DATABASE_REPLICA_URLS=urls)
    assert aliases == ["replica_1", "replica_2"]
    assert replica["replica_1"][:4] == ["10.0.0.2", 5432, "rag", {"connect_timeout": 2, "prepare_threshold": 5}]
    # A mirror in tests: the replica's copy of the test database is read, never created or flushed there.
    assert replica["replica_1"][4]["MIRROR"] == "default"
    assert replica["replica_2"][0] == "10.0.0.3"
    assert replica["replica_2"][3] == {"connect_timeout": 5, "prepare_threshold": 5}  # the URL's timeout
    assert routers == ["core.replicas.ReplicaRouter"] and middleware is True
    # Behind a pooler that cannot keep prepared statements, neither the primary nor a replica prepares any.
    _, replica, _, _ = routing_settings(tmp_path, DATABASE_REPLICA_URLS=urls, DATABASE_PREPARE_THRESHOLD="0")
    assert replica["replica_1"][3]["prepare_threshold"] is None


def test_without_replica_urls_there_is_no_alias_router_or_middleware(tmp_path):
    assert routing_settings(tmp_path) == [[], {}, [], False]
