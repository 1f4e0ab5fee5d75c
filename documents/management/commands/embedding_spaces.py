"""manage.py embedding_spaces add|list|migrate|status|evaluate|switch|rollback|retire (issue 14).

Each subcommand calls documents.spaces (migration: the changes; quality: the evaluation; overview: the figures)
and prints ``key=value`` figures on its last line, for scripts. A refused switch exits with status 2 and the
reason on stderr; other refusals exit with status 1.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core.http import parse_id
from documents.models import Collection, EmbeddingSpace
from documents.search import evaluation as labelled
from documents.spaces import overview, quality
from documents.spaces.migration import (
    SpaceRefused,
    SwitchRefused,
    migration_start,
    migration_status,
    retire,
    rollback,
    space_add,
    switch,
)

SWITCH_REFUSED = 2  # the exit status of a refused switch


def figures(values: dict[str, Any]) -> str:
    """``key=value ...``: None as ``none``, booleans in lower case, a value with spaces quoted for the shell."""

    def shown(value: Any) -> str:
        if value is None:
            return "none"
        if isinstance(value, bool):
            return str(value).lower()
        return shlex.quote(str(value))

    return " ".join(f"{key}={shown(value)}" for key, value in values.items())


def find_collection(value: str) -> Collection:
    """The collection named ``value``, or of id ``value``; a clear error when none (or several) match."""
    named = list(Collection.objects.filter(name=value).select_related("active_space")[:2])
    if len(named) > 1:
        raise CommandError(f"Several collections are named {value!r}: give the id of the one you mean.")
    if named:
        return named[0]
    collection_id = parse_id(value)
    found = Collection.objects.filter(pk=collection_id).first() if collection_id is not None else None
    if found is None:
        raise CommandError(f"No collection named {value!r} (nor of that id).")
    return found


def find_space(name: str) -> EmbeddingSpace:
    space = EmbeddingSpace.objects.filter(name=name).first()
    if space is None:
        known = ", ".join(EmbeddingSpace.objects.values_list("name", flat=True)) or "none yet"
        raise CommandError(f"No embedding space named {name!r} (known: {known}).")
    return space


class Command(BaseCommand):
    help = "Embedding spaces: add one, migrate a collection to it, evaluate, switch, roll back, retire."

    def add_arguments(self, parser):
        commands = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
        add = commands.add_parser("add", help="Add a space (its model is loaded now, to refuse a typo at once).")
        add.add_argument("--name", required=True)
        add.add_argument("--backend", required=True, choices=["openai", "fastembed", "hashing", "local"])
        add.add_argument("--model", default="")
        add.add_argument("--model-path", default="")
        add.add_argument("--dimensions", type=int, default=None)
        commands.add_parser("list", help="Every space: model, status, rows, size, collections.")
        migrate = commands.add_parser("migrate", help="Start moving a collection to a space (returns at once).")
        migrate.add_argument("--collection", required=True, help="Collection name or id.")
        migrate.add_argument("--to", required=True, help="The target space's name.")
        status = commands.add_parser("status", help="A collection's spaces, migration state, progress and ETA.")
        status.add_argument("--collection", required=True, help="Collection name or id.")
        evaluate = commands.add_parser("evaluate", help="Compare the active and target spaces (the switch's gate).")
        evaluate.add_argument("--collection", required=True, help="Collection name or id.")
        evaluate.add_argument("--queries", type=Path, help="queries.jsonl (BEIR: _id, text)")
        evaluate.add_argument("--qrels", type=Path, help="qrels.tsv (query-id, corpus-id, score)")
        evaluate.add_argument("--sample", type=int, default=50, help="Recent and synthetic queries, each (50).")
        switch_ = commands.add_parser("switch", help="Make the target space active (refused: exit status 2).")
        switch_.add_argument("--collection", required=True, help="Collection name or id.")
        switch_.add_argument("--force", action="store_true", help="Switch although the quality gate refuses.")
        back = commands.add_parser("rollback", help="Search the space before the last switch again.")
        back.add_argument("--collection", required=True, help="Collection name or id.")
        retire_ = commands.add_parser("retire", help="Drop a space's vectors and indexes.")
        retire_.add_argument("name")

    def handle(self, *args, subcommand: str, **options):
        try:
            getattr(self, f"_{subcommand}")(**options)
        except SwitchRefused as refused:
            raise CommandError(refused.reason, returncode=SWITCH_REFUSED) from refused
        except (SpaceRefused, quality.EvaluationError) as refused:
            raise CommandError(str(refused)) from refused

    def _say(self, values: dict[str, Any]) -> None:
        self.stdout.write(figures(values))

    def _add(self, *, name, backend, model, model_path, dimensions, **_):
        space = space_add(name=name, backend=backend, model=model, model_path=model_path, dimensions=dimensions)
        self._say(
            {
                "space": space.name,
                "id": space.pk,
                "backend": space.backend,
                "model": space.model,
                "dimensions": space.dimensions,
                "status": space.status,
            }
        )

    def _list(self, **_):
        spaces = overview.spaces_overview()
        for space in spaces:
            self.stdout.write(
                f"{space['name']}{' (default)' if space['default'] else ''}: {space['backend']} {space['model']}, "
                f"{space['dimensions']} dimensions, {space['status']}, {space['rows']:,} vectors, "
                f"{space['bytes'] / 2**20:.1f} MiB, {space['collections']} collection(s) active, "
                f"{space['migrating_to']} migrating to it, {space['kept_for_rollback']} kept for rollback"
            )
        default = next((space["name"] for space in spaces if space["default"]), None)
        self._say(
            {
                "spaces": len(spaces),
                "default": default,
                "active": sum(space["status"] == EmbeddingSpace.Status.ACTIVE for space in spaces),
            }
        )

    def _migrate(self, *, collection, to, **_):
        migration = migration_start(collection=find_collection(collection), target=find_space(to))
        self._say(
            {
                "collection": migration.collection.name,
                "migration": migration.pk,
                "source": migration.source.name,
                "target": migration.target.name,
                "state": migration.state,
                "total": migration.chunks_total,
            }
        )

    def _status(self, *, collection, **_):
        state = migration_status(find_collection(collection))
        first = ("active", "target", "coverage", "state")
        self._say(
            {key: state.get(key) for key in first}
            | {key: value for key, value in state.items() if key not in first and key != "error"}
        )
        if state.get("error"):
            self.stderr.write(f"The migration failed: {state['error']}")

    def _evaluate(self, *, collection, queries, qrels, sample, **_):
        if (queries is None) != (qrels is None):
            raise CommandError("Give both --queries and --qrels, or neither.")
        texts = judgments = None
        if queries is not None:
            for path in (queries, qrels):
                if not path.is_file():
                    raise CommandError(f"{path} is not a readable file.")
            try:
                texts, judgments = labelled.load_queries(queries), labelled.load_qrels(qrels)
            except (ValueError, KeyError, UnicodeDecodeError) as error:
                raise CommandError(f"The queries or qrels are not in BEIR's layout: {error!r}.") from error
        result = quality.evaluate(collection=find_collection(collection), queries=texts, qrels=judgments, sample=sample)
        self._say({key: result[key] for key in quality.FIGURES})

    def _switch(self, *, collection, force, **_):
        migration = switch(collection=find_collection(collection), force=force)
        self._say(
            {
                "collection": migration.collection.name,
                "active": migration.target.name,
                "previous": migration.source.name,
                "state": migration.state,
                "forced": migration.forced,
            }
        )

    def _rollback(self, *, collection, **_):
        collection = rollback(collection=find_collection(collection))
        self._say(
            {
                "collection": collection.name,
                "active": collection.active_space.name,
                "previous": collection.previous_space.name if collection.previous_space else None,
            }
        )

    def _retire(self, *, name, **_):
        space = retire(space=find_space(name))
        self._say({"space": space.name, "status": space.status})
