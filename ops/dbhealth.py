"""Database health, read from PostgreSQL's own catalogs and statistics views (selectors only).

Modelled on pgHero's checks: the costliest statements (pg_stat_statements), unused / duplicate / invalid
indexes, pgvector's version and index sizes, index builds in progress, table bloat and vacuum, the cache
hit ratio, connections, long-running and idle-in-transaction sessions, replication lag, and the sampled
recall of the HNSW indexes (ops.recall). The admin page (ops.views) and ``manage.py db_health`` show the
same :func:`report`.

Severity: ``alert`` is something to fix now (an invalid index, a pgvector release with a known data or
build bug, recall below RECALL_FLOOR); ``warn`` deserves a look (pg_stat_statements off, duplicate indexes
outside Django's own tables, a vector index larger than shared_buffers, long-running or idle-in-transaction
sessions). Unused indexes are listed but never raise the status: statistics start empty after a restore or a
stats reset.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.db import connection, transaction

from documents.models import Chunk
from ops.models import RecallSample

OK, WARN, ALERT = "ok", "warn", "alert"
_RANK = {OK: 0, WARN: 1, ALERT: 2}

# pgvector releases with a fix worth upgrading for: (version that fixed it, what it fixed).
PGVECTOR_FIXES: tuple[tuple[tuple[int, ...], str], ...] = (
    ((0, 8, 2), "an overflow in parallel HNSW index builds (fixed in 0.8.2)"),
    ((0, 8, 3), "an HNSW vacuum bug (fixed in 0.8.3)"),
)

ENABLE_PG_STAT_STATEMENTS = {
    "unavailable": "The pg_stat_statements extension is not installed on the database server. It ships with "
    "PostgreSQL's contrib modules (the postgresql-contrib package; the pgvector/pgvector images and the "
    "embedded server have it).",
    "not_loaded": "pg_stat_statements is not loaded. Add it to shared_preload_libraries (postgresql.conf: "
    "shared_preload_libraries = 'pg_stat_statements', or start the server with "
    "-c shared_preload_libraries=pg_stat_statements as docker-compose.yml does) and restart PostgreSQL. "
    "The embedded server of `make run` configures it itself and loads it on its next start (make stop).",
    "not_created": "pg_stat_statements is loaded but not created in this database: run "
    "CREATE EXTENSION pg_stat_statements; as a superuser (manage.py migrate does it when it can).",
}


def _rows(sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        names = [column.name for column in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _value(sql: str, params: Sequence[Any] = ()) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else row[0]


# --- statements -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    query: str
    calls: int
    total_ms: float
    mean_ms: float
    rows: int
    hit_ratio: float | None  # shared buffer hits / (hits + reads); None when it read no blocks


@dataclass(frozen=True)
class Statements:
    state: str  # "on", or a key of ENABLE_PG_STAT_STATEMENTS
    by_total: list[Statement] = field(default_factory=list)
    by_mean: list[Statement] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.state == "on"

    @property
    def how_to_enable(self) -> str:
        return ENABLE_PG_STAT_STATEMENTS.get(self.state, "")


def pg_stat_statements_state() -> str:
    """The state of pg_stat_statements for this database: on, unavailable, not_loaded or not_created."""
    if not _value("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_stat_statements'"):
        return "unavailable"
    preloaded = _value("SELECT current_setting('shared_preload_libraries')") or ""
    if "pg_stat_statements" not in [name.strip() for name in preloaded.split(",")]:
        return "not_loaded"
    if not _value("SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"):
        return "not_created"
    return "on"


def top_statements(*, limit: int = 10) -> Statements:
    """This database's statements with the most total and the most mean execution time."""
    state = pg_stat_statements_state()
    if state != "on":
        return Statements(state=state)
    schema = _value(
        "SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_stat_statements'"
    )
    select = (
        "SELECT query, calls, total_exec_time AS total_ms, mean_exec_time AS mean_ms, rows, "
        "shared_blks_hit::float8 / nullif(shared_blks_hit + shared_blks_read, 0) AS hit_ratio "
        f"FROM {schema}.pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    )
    by_total = [Statement(**row) for row in _rows(select + "ORDER BY total_exec_time DESC LIMIT %s", [limit])]
    by_mean = [Statement(**row) for row in _rows(select + "ORDER BY mean_exec_time DESC LIMIT %s", [limit])]
    return Statements(state=state, by_total=by_total, by_mean=by_mean)


# --- indexes ----------------------------------------------------------------------------------------------

_USER_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'"


@dataclass(frozen=True)
class IndexRow:
    table: str
    index: str
    bytes: int
    detail: str = ""


@dataclass(frozen=True)
class Indexes:
    unused: list[IndexRow]
    duplicate: list[IndexRow]  # detail: the index it duplicates
    framework_redundant: list[IndexRow]  # the same, on Django's own tables: listed, never a warning
    invalid: list[IndexRow]  # detail: "being built" while a build is in progress


def unused_indexes() -> list[IndexRow]:
    """Valid indexes never scanned since statistics began, except those behind a primary key, a unique or
    exclusion constraint (they enforce something even when no query reads them)."""
    rows = _rows(
        "SELECT s.relname AS table, s.indexrelname AS index, pg_relation_size(s.indexrelid) AS bytes, "
        "coalesce('statistics since ' || to_char(d.stats_reset, 'YYYY-MM-DD'), '') AS detail "
        "FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid "
        "LEFT JOIN pg_stat_database d ON d.datname = current_database() "
        "WHERE s.idx_scan = 0 AND i.indisvalid AND NOT i.indisunique AND NOT i.indisprimary "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) "
        "ORDER BY bytes DESC, s.indexrelname"
    )
    return [IndexRow(**row) for row in rows]


def duplicate_indexes() -> list[IndexRow]:
    """Indexes made redundant by another of their table, as pgHero finds them: the same method, columns or
    expressions, operator classes, orderings, collations and predicate; or, for a btree index on plain columns,
    those columns as the leading ones of another btree index with the same predicate (which serves every query
    the shorter one does, and costs each write one index fewer without it). Of two alike, the newer is listed; a
    plain index is redundant beside a unique one, never the other way round, and a primary key or a unique index
    never is the shorter one. ``detail`` names the index to keep, "(its leading columns)" after it for a longer
    one.

    Django's own tables (of Django's and libraries' apps, and the join tables it makes for many-to-many fields)
    are left out: their indexes come with Django's migrations, which would make them again
    (framework_redundant_indexes lists them)."""
    return _redundant_by_owner()[0]


def framework_redundant_indexes() -> list[IndexRow]:
    """duplicate_indexes() of Django's own tables: the foreign-key index Django adds beside a unique constraint that
    starts with the same column (auth_user_groups' user_id, a many-to-many join table's first column). Listed on the
    page for completeness, never a warning: Django's migrations own them."""
    return _redundant_by_owner()[1]


def _redundant_by_owner() -> tuple[list[IndexRow], list[IndexRow]]:
    """The redundant indexes (one query), split: those of other tables, those of Django's own."""
    framework = _framework_tables()
    found = _redundant_indexes()
    return ([index for index in found if index.table not in framework],
            [index for index in found if index.table in framework])


def _redundant_indexes() -> list[IndexRow]:
    # Key columns, operator classes, collations and orderings as 1-based text arrays: the first n of each compared.
    def keys(alias: str, vector: str, count: str = "") -> str:
        return f"(string_to_array({alias}.{vector}::text, ' '))[1:{count or alias + '.indnkeyatts'}]"

    same_expressions_and_predicate = (
        "coalesce(pg_get_expr(a.indexprs, a.indrelid), '') = coalesce(pg_get_expr(b.indexprs, b.indrelid), '') "
        "AND coalesce(pg_get_expr(a.indpred, a.indrelid), '') = coalesce(pg_get_expr(b.indpred, b.indrelid), '')"
    )
    alike = (
        "a.indkey::text = b.indkey::text AND a.indclass::text = b.indclass::text "
        "AND a.indoption::text = b.indoption::text AND a.indcollation::text = b.indcollation::text "
        f"AND {same_expressions_and_predicate} AND (b.indisunique OR NOT a.indisunique) "
        "AND (a.indisunique <> b.indisunique OR b.indisprimary OR a.indexrelid > b.indexrelid)"
    )
    leading = (
        "am.amname = 'btree' AND NOT a.indisunique AND a.indnatts = a.indnkeyatts AND a.indnkeyatts < b.indnkeyatts "
        "AND NOT 0 = ANY(a.indkey::int2[]) "  # no expression among its columns
        f"AND {keys('a', 'indkey')} = {keys('b', 'indkey', 'a.indnkeyatts')} "
        f"AND {keys('a', 'indclass')} = {keys('b', 'indclass', 'a.indnkeyatts')} "
        f"AND {keys('a', 'indoption')} = {keys('b', 'indoption', 'a.indnkeyatts')} "
        f"AND {keys('a', 'indcollation')} = {keys('b', 'indcollation', 'a.indnkeyatts')} "
        "AND coalesce(pg_get_expr(a.indpred, a.indrelid), '') = coalesce(pg_get_expr(b.indpred, b.indrelid), '')"
    )
    rows = _rows(
        # One row per redundant index, naming the one to keep: one alike before a longer one; then a primary key,
        # else a unique one, else the oldest.
        "SELECT \"table\", index, bytes, detail FROM (SELECT DISTINCT ON (a.indexrelid) t.relname AS table, "
        "ca.relname AS index, pg_relation_size(a.indexrelid) AS bytes, "
        "cb.relname || CASE WHEN b.indnkeyatts > a.indnkeyatts THEN ' (its leading columns)' ELSE '' END AS detail "
        "FROM pg_index a JOIN pg_index b ON b.indrelid = a.indrelid AND b.indexrelid <> a.indexrelid "
        "JOIN pg_class ca ON ca.oid = a.indexrelid JOIN pg_class cb ON cb.oid = b.indexrelid "
        "JOIN pg_am am ON am.oid = ca.relam "
        "JOIN pg_class t ON t.oid = a.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
        f"WHERE {_USER_SCHEMAS} AND a.indisvalid AND b.indisvalid AND ca.relam = cb.relam AND NOT a.indisprimary "
        f"AND (({alike}) OR ({leading})) "
        "ORDER BY a.indexrelid, b.indnkeyatts > a.indnkeyatts, b.indisprimary DESC, b.indisunique DESC, "
        "b.indexrelid) AS redundant "
        'ORDER BY "table", index'
    )
    return [IndexRow(**row) for row in rows]


def project_apps() -> list[AppConfig]:
    """The apps of this project (a package at its root), not Django's nor a library's."""
    return [config for config in apps.get_app_configs() if (settings.BASE_DIR / config.name.split(".")[0]).is_dir()]


def _framework_tables() -> set[str]:
    """The tables of Django's and libraries' apps (not a package of this project), and the join tables Django makes
    for many-to-many fields."""
    ours = {config.label for config in project_apps()}
    return {
        model._meta.db_table
        for model in apps.get_models(include_auto_created=True)
        if model._meta.app_label not in ours or model._meta.auto_created
    }


def invalid_indexes() -> list[IndexRow]:
    """Indexes PostgreSQL does not use: a failed or cancelled CREATE INDEX CONCURRENTLY leaves one behind
    (drop it and build it again); one still being built is invalid until it finishes."""
    rows = _rows(
        "SELECT t.relname AS table, c.relname AS index, pg_relation_size(c.oid) AS bytes, "
        "CASE WHEN EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = c.oid) "
        "THEN 'being built' ELSE '' END AS detail "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid "
        f"JOIN pg_namespace n ON n.oid = t.relnamespace WHERE NOT i.indisvalid AND {_USER_SCHEMAS} "
        "ORDER BY t.relname, c.relname"
    )
    return [IndexRow(**row) for row in rows]


def indexes() -> Indexes:
    duplicate, framework_redundant = _redundant_by_owner()
    return Indexes(
        unused=unused_indexes(), duplicate=duplicate, framework_redundant=framework_redundant,
        invalid=invalid_indexes(),
    )


# --- pgvector ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VectorIndex:
    table: str
    index: str
    method: str  # hnsw or ivfflat
    bytes: int
    fits_in_shared_buffers: bool


@dataclass(frozen=True)
class IndexBuild:
    pid: int
    table: str
    index: str
    command: str
    phase: str
    blocks_done: int
    blocks_total: int
    tuples_done: int
    tuples_total: int

    @property
    def percent(self) -> int | None:
        for done, total in ((self.blocks_done, self.blocks_total), (self.tuples_done, self.tuples_total)):
            if total:
                return min(100, 100 * done // total)
        return None


@dataclass(frozen=True)
class Pgvector:
    version: str | None  # None: the extension is not created in this database
    missing_fixes: list[str]
    shared_buffers_bytes: int
    indexes: list[VectorIndex]
    builds: list[IndexBuild]


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def missing_pgvector_fixes(version: str) -> list[str]:
    """The known fixes a pgvector version lacks (see PGVECTOR_FIXES)."""
    have = _version_tuple(version)
    return [what for fixed_in, what in PGVECTOR_FIXES if have < fixed_in]


def index_builds() -> list[IndexBuild]:
    """CREATE INDEX / REINDEX running now, with their progress (pg_stat_progress_create_index)."""
    rows = _rows(
        "SELECT p.pid, p.relid::regclass::text AS table, "
        "coalesce(nullif(p.index_relid, 0)::regclass::text, '') AS index, p.command, p.phase, "
        "p.blocks_done, p.blocks_total, p.tuples_done, p.tuples_total "
        "FROM pg_stat_progress_create_index p WHERE p.datname = current_database() ORDER BY p.pid"
    )
    return [IndexBuild(**row) for row in rows]


def pgvector() -> Pgvector:
    version = _value("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    shared_buffers = int(
        _value(
            "SELECT setting::bigint * current_setting('block_size')::bigint FROM pg_settings "
            "WHERE name = 'shared_buffers'"
        )
    )
    rows = _rows(
        "SELECT t.relname AS table, c.relname AS index, am.amname AS method, pg_relation_size(c.oid) AS bytes "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid "
        "JOIN pg_am am ON am.oid = c.relam WHERE am.amname IN ('hnsw', 'ivfflat') ORDER BY t.relname, c.relname"
    )
    return Pgvector(
        version=version,
        missing_fixes=missing_pgvector_fixes(version) if version else [],
        shared_buffers_bytes=shared_buffers,
        indexes=[VectorIndex(**row, fits_in_shared_buffers=row["bytes"] <= shared_buffers) for row in rows],
        builds=index_builds(),
    )


# --- tables and sessions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableStats:
    table: str
    live_tuples: int
    dead_tuples: int
    last_autovacuum: datetime | None
    last_vacuum: datetime | None
    last_autoanalyze: datetime | None

    @property
    def dead_ratio(self) -> float:
        total = self.live_tuples + self.dead_tuples
        return self.dead_tuples / total if total else 0.0


@dataclass(frozen=True)
class Session:
    pid: int
    user: str
    application: str
    state: str
    duration: timedelta
    query: str


@dataclass(frozen=True)
class Replica:
    name: str
    address: str
    state: str
    sync_state: str
    lag_bytes: int | None
    replay_lag: timedelta | None


@dataclass(frozen=True)
class Activity:
    table_hit_ratio: float | None
    index_hit_ratio: float | None
    connections: dict[str, int]  # state → count, this database
    max_connections: int
    long_running: list[Session]
    idle_in_transaction: list[Session]
    replicas: list[Replica]


_TABLE_STATS = (
    "SELECT relname AS table, n_live_tup AS live_tuples, n_dead_tup AS dead_tuples, last_autovacuum, "
    "last_vacuum, last_autoanalyze FROM pg_stat_user_tables "
)


def chunk_table() -> TableStats | None:
    rows = _rows(_TABLE_STATS + "WHERE relid = to_regclass(%s)", [Chunk._meta.db_table])
    return TableStats(**rows[0]) if rows else None


def most_dead_tuples(*, limit: int = 10) -> list[TableStats]:
    return [
        TableStats(**row)
        for row in _rows(_TABLE_STATS + "WHERE n_dead_tup > 0 ORDER BY n_dead_tup DESC LIMIT %s", [limit])
    ]


def _sessions(where: str, seconds: float, since: str) -> list[Session]:
    # clock_timestamp(), not now(): the report runs in a transaction, whose now() is when it began.
    rows = _rows(
        f"SELECT pid, coalesce(usename, '') AS user, application_name AS application, state, "
        f"clock_timestamp() - {since} AS duration, left(query, 500) AS query FROM pg_stat_activity "
        f"WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND {where} "
        f"AND clock_timestamp() - {since} >= make_interval(secs => %s) ORDER BY duration DESC",
        [seconds],
    )
    return [Session(**row) for row in rows]


def activity() -> Activity:
    table_hits = _value(
        "SELECT sum(heap_blks_hit)::float8 / nullif(sum(heap_blks_hit) + sum(heap_blks_read), 0) "
        "FROM pg_statio_user_tables"
    )
    index_hits = _value(
        "SELECT sum(idx_blks_hit)::float8 / nullif(sum(idx_blks_hit) + sum(idx_blks_read), 0) "
        "FROM pg_statio_user_indexes"
    )
    connections = {
        row["state"]: row["count"]
        for row in _rows(
            "SELECT coalesce(state, 'background') AS state, count(*) AS count FROM pg_stat_activity "
            "WHERE datname = current_database() GROUP BY 1 ORDER BY 2 DESC"
        )
    }
    replicas: list[Replica] = []
    if not _value("SELECT pg_is_in_recovery()"):
        replicas = [
            Replica(**row)
            for row in _rows(
                "SELECT coalesce(application_name, '') AS name, coalesce(client_addr::text, 'local') AS address, "
                "state, sync_state, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS lag_bytes, "
                "replay_lag FROM pg_stat_replication ORDER BY application_name"
            )
        ]
    return Activity(
        table_hit_ratio=table_hits,
        index_hit_ratio=index_hits,
        connections=connections,
        max_connections=int(_value("SELECT current_setting('max_connections')")),
        long_running=_sessions("state = 'active'", settings.DB_HEALTH_LONG_QUERY_SECONDS, "query_start"),
        idle_in_transaction=_sessions(
            "state LIKE 'idle in transaction%%'", settings.DB_HEALTH_IDLE_IN_TRANSACTION_SECONDS, "state_change"
        ),
        replicas=replicas,
    )


# --- everything -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    severity: str  # WARN or ALERT
    message: str


@dataclass(frozen=True)
class Report:
    statements: Statements
    indexes: Indexes
    pgvector: Pgvector
    chunk_table: TableStats | None
    dead_tuples: list[TableStats]
    activity: Activity
    recall: list[RecallSample]  # the latest sample of each embedding space and distance
    recall_history: list[RecallSample]
    recall_floor: float
    findings: list[Finding]

    @property
    def status(self) -> str:
        return max((finding.severity for finding in self.findings), key=_RANK.__getitem__, default=OK)

    def summary(self) -> dict[str, str]:
        """The one-line ``key=value`` summary of ``manage.py db_health``."""
        recall = min((sample.mean for sample in self.recall), default=None)
        return {
            "status": self.status,
            "pg_stat_statements": self.statements.state,
            "unused_indexes": str(len(self.indexes.unused)),
            "invalid_indexes": str(len(self.indexes.invalid)),
            "duplicate_indexes": str(len(self.indexes.duplicate)),
            "pgvector": self.pgvector.version or "none",
            "vector_indexes_over_shared_buffers": str(
                sum(not index.fits_in_shared_buffers for index in self.pgvector.indexes)
            ),
            "index_builds": str(len(self.pgvector.builds)),
            "chunk_dead_tuples": str(self.chunk_table.dead_tuples if self.chunk_table else 0),
            "cache_hit": "none" if self.activity.table_hit_ratio is None else f"{self.activity.table_hit_ratio:.3f}",
            "long_running": str(len(self.activity.long_running)),
            "idle_in_transaction": str(len(self.activity.idle_in_transaction)),
            "replicas": str(len(self.activity.replicas)),
            "recall": "none" if recall is None else f"{recall:.3f}",
        }


def findings(
    statements: Statements,
    found: Indexes,
    vector: Pgvector,
    active: Activity,
    recall: list[RecallSample],
    floor: float,
) -> list[Finding]:
    out: list[Finding] = []
    for index in found.invalid:
        if index.detail != "being built":
            out.append(Finding(ALERT, f"Index {index.index} on {index.table} is invalid: drop it and build it again."))
    for what in vector.missing_fixes:
        out.append(Finding(ALERT, f"pgvector {vector.version} lacks {what}: upgrade the extension."))
    for sample in recall:
        if sample.mean < floor:
            out.append(
                Finding(ALERT, f"Recall of the {sample.index} HNSW index is {sample.mean:.3f}, below {floor:.2f}.")
            )
    if not statements.enabled:
        out.append(Finding(WARN, "pg_stat_statements is off: " + statements.how_to_enable))
    for index in found.duplicate:
        out.append(Finding(WARN, f"Index {index.index} on {index.table} is redundant beside {index.detail}."))
    for vector_index in vector.indexes:
        if not vector_index.fits_in_shared_buffers:
            out.append(Finding(WARN, f"Vector index {vector_index.index} is larger than shared_buffers."))
    if active.long_running:
        out.append(Finding(WARN, f"{len(active.long_running)} long-running statement(s)."))
    if active.idle_in_transaction:
        out.append(Finding(WARN, f"{len(active.idle_in_transaction)} session(s) idle in a transaction."))
    return out


def report(*, statements_limit: int = 10) -> Report:
    """Every check, in one read-only transaction (a failing check cannot leave a broken one behind)."""
    with transaction.atomic():
        statements = top_statements(limit=statements_limit)
        found = indexes()
        vector = pgvector()
        chunks = chunk_table()
        dead = most_dead_tuples()
        active = activity()
    latest = RecallSample.objects.latest_by_distance()
    history = list(RecallSample.objects.select_related("space").order_by("-taken_at", "space_id", "distance")[:30])
    floor = settings.RECALL_FLOOR
    return Report(
        statements=statements,
        indexes=found,
        pgvector=vector,
        chunk_table=chunks,
        dead_tuples=dead,
        activity=active,
        recall=latest,
        recall_history=history,
        recall_floor=floor,
        findings=findings(statements, found, vector, active, latest, floor),
    )
