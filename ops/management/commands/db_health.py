"""Print the database health checks (the admin page's), for cron and CI.

The last line is ``key=value`` pairs (status=ok|warn|alert, pg_stat_statements=on|not_loaded|…, index counts,
pgvector=<version>, recall=<lowest latest mean> …). Exit status: 1 when the status is ``alert`` (an invalid
index, a pgvector release lacking a known fix, sampled recall below RECALL_FLOOR), else 0 — ``warn`` findings
are printed but do not fail; ``--strict`` fails on them too. 2 when the database cannot be reached (the last
line is then ``status=unreachable``).
"""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from core.http import DATABASE_ERRORS
from ops import dbhealth


def _size(value: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024:
            return f"{value:.0f} {unit}"
        value /= 1024  # type: ignore[assignment]
    return f"{value:.1f} TB"


class Command(BaseCommand):
    help = "Database health: statements, indexes, pgvector, vacuum, sessions, replicas, recall. Exit 1 on an alert."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--strict", action="store_true", help="Exit 1 on warnings too.")
        parser.add_argument("--statements", type=int, default=5, help="Statements listed by total and mean time.")

    def handle(self, *args: Any, strict: bool, statements: int, **options: Any) -> None:
        try:
            report = dbhealth.report(statements_limit=statements)
        except DATABASE_ERRORS as error:
            self.stderr.write(f"The database is not reachable: {str(error).strip().splitlines()[0]}")
            self.stdout.write("status=unreachable")
            raise SystemExit(2) from error
        out = self.stdout.write

        out("== Statements (pg_stat_statements)")
        if report.statements.enabled:
            by = (("by total time", report.statements.by_total), ("by mean time", report.statements.by_mean))
            for title, rows in by:
                out(f"-- {title}")
                for s in rows:
                    hit = "-" if s.hit_ratio is None else f"{s.hit_ratio:.3f}"
                    query = " ".join(s.query.split())[:120]
                    out(
                        f"{s.total_ms:10.1f} ms total {s.mean_ms:9.2f} ms mean {s.calls:8d} calls "
                        f"{s.rows:8d} rows hit {hit}  {query}"
                    )
        else:
            out(f"off ({report.statements.state}): {report.statements.how_to_enable}")

        out("== Indexes")
        for kind, found in (
            ("invalid", report.indexes.invalid),
            ("duplicate", report.indexes.duplicate),
            ("duplicate in Django's own tables (its migrations keep them)", report.indexes.framework_redundant),
            ("unused", report.indexes.unused),
        ):
            out(f"-- {kind}: {len(found)}")
            for index in found:
                beside = "redundant beside " if kind.startswith("duplicate") else ""
                detail = f" ({beside}{index.detail})" if index.detail else ""
                out(f"{index.table}.{index.index} {_size(index.bytes)}{detail}")

        vector = report.pgvector
        out("== pgvector")
        out(f"version {vector.version or 'not installed'}; shared_buffers {_size(vector.shared_buffers_bytes)}")
        for what in vector.missing_fixes:
            out(f"lacks {what}")
        for vi in vector.indexes:
            fits = "fits in" if vi.fits_in_shared_buffers else "LARGER than"
            out(f"{vi.method} {vi.table}.{vi.index} {_size(vi.bytes)} ({fits} shared_buffers)")
        for build in vector.builds:
            percent = "" if build.percent is None else f" {build.percent}%"
            out(f"building: pid {build.pid} {build.command} on {build.table}: {build.phase}{percent}")

        out("== Recall (HNSW top-10 against exact, sampled)")
        for sample in report.recall:
            out(
                f"{sample.index}: mean {sample.mean:.3f} p10 {sample.p10:.3f} min {sample.minimum:.3f} "
                f"({sample.queries} queries, {sample.taken_at:%Y-%m-%d %H:%M})"
            )
        if not report.recall:
            out("no sample yet")

        out("== Tables and sessions")
        chunks = report.chunk_table
        if chunks:
            out(
                f"chunk table: {chunks.live_tuples} live, {chunks.dead_tuples} dead; "
                f"last autovacuum {chunks.last_autovacuum or 'never'}"
            )
        active = report.activity
        ratio = "-" if active.table_hit_ratio is None else f"{active.table_hit_ratio:.3f}"
        out(f"cache hit ratio (tables): {ratio}")
        out(
            "connections: "
            + ", ".join(f"{state} {count}" for state, count in active.connections.items())
            + f" (max_connections {active.max_connections})"
        )
        for session in active.long_running:
            out(f"long-running: pid {session.pid} {session.duration} {' '.join(session.query.split())[:100]}")
        for session in active.idle_in_transaction:
            out(f"idle in transaction: pid {session.pid} {session.duration} {session.application}")
        for replica in active.replicas:
            lag = "-" if replica.lag_bytes is None else _size(replica.lag_bytes)
            out(f"replica {replica.name} {replica.address} {replica.state} lag {lag} replay {replica.replay_lag}")

        for finding in report.findings:
            out(f"{finding.severity.upper()}: {finding.message}")
        out(" ".join(f"{key}={value}" for key, value in report.summary().items()))
        if report.status == dbhealth.ALERT or (strict and report.status != dbhealth.OK):
            raise SystemExit(1)
