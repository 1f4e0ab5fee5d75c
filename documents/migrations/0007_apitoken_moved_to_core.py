# ApiToken moved to the core app (core.0001_initial): dropped from this app's state only, its table is kept.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("documents", "0006_document_error_detail"),
        ("core", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="ApiToken")],
            database_operations=[],
        ),
    ]
