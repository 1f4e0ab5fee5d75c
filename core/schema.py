"""Migration operations that change a table's indexes without stopping its reads and writes."""

from typing import Any

from django.contrib.postgres.operations import NotInTransactionMixin
from django.db import migrations
from django.db.models import Field, Index


class AlterFieldIndexConcurrently(NotInTransactionMixin, migrations.AlterField):
    """``AlterField`` for a field whose only change is ``db_index``: its own index dropped, or built, CONCURRENTLY.

    Django's ``AlterField`` drops the index with a plain DROP INDEX, which waits for an ACCESS EXCLUSIVE lock on the
    table: behind one long transaction that has read the table (a search, a document being stored), every read and
    write of the table then queues behind the migration. DROP INDEX CONCURRENTLY takes a lock that reads and writes
    do not wait for, and waits for those transactions itself; CREATE INDEX CONCURRENTLY (going back) does not block
    writes either. The migration that uses it must say ``atomic = False``.
    """

    atomic = False

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        self._ensure_not_in_transaction(schema_editor)
        old = from_state.apps.get_model(app_label, self.model_name)
        new = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, new):
            return
        old_field, new_field = old._meta.get_field(self.name), new._meta.get_field(self.name)
        if _without_index(old_field) != _without_index(new_field):
            raise ValueError(f"{self.model_name}.{self.name}: only db_index may change in {type(self).__name__}")
        if old_field.db_index and not new_field.db_index:
            # Found as Django's AlterField finds it: the field's own index, whatever its name.
            for name in schema_editor._constraint_names(old, [old_field.column], index=True, type_=Index.suffix):
                schema_editor.remove_index(old, Index(fields=[old_field.name], name=name), concurrently=True)
        elif new_field.db_index and not old_field.db_index:
            name = schema_editor._create_index_name(new._meta.db_table, [new_field.column], suffix="")
            schema_editor.add_index(new, Index(fields=[new_field.name], name=name), concurrently=True)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        self.database_forwards(app_label, schema_editor, from_state, to_state)

    def describe(self) -> str:
        return f"Concurrently alter the index of field {self.name} on {self.model_name}"


def _without_index(field: "Field[Any, Any]") -> tuple[Any, ...]:
    _, path, args, kwargs = field.deconstruct()
    kwargs.pop("db_index", None)
    return path, args, kwargs
