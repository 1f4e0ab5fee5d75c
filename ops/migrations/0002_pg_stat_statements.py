"""Create pg_stat_statements where the server ships it and we may: never fails where it cannot.

The extension's view answers only when the library is in shared_preload_libraries (the embedded server and
docker-compose.yml load it); the database health page says how to enable it when it is not.
"""

from django.db import migrations

CREATE = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements') THEN
        CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
    END IF;
EXCEPTION WHEN insufficient_privilege OR feature_not_supported THEN
    RAISE NOTICE 'pg_stat_statements not created: %', SQLERRM;
END
$$;
"""


class Migration(migrations.Migration):
    dependencies = [("ops", "0001_recall_samples")]

    # Not dropped on the way back: other tools may rely on it, and it holds no data of ours.
    operations = [migrations.RunSQL(CREATE, reverse_sql=migrations.RunSQL.noop)]
