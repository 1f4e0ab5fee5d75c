"""Four more foreign-key indexes that only repeated the start of another index of their table (as in 0017):

- ``documents_collection (owner_id)``: ``unique_collection_name_per_owner`` is ``(owner_id, name)``;
- ``documents_document (owner_id)``: the library's ``(owner_id, created_at DESC)``;
- ``documents_document (collection_id)``: ``unique_file_per_collection`` is ``(collection_id, sha256)``;
- ``documents_interest (user_id)``: ``interest_newest_first`` is ``(user_id, created_at DESC)``.

tests/documents/test_models.py checks that no index of the apps' tables begins another.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from core.schema import AlterFieldIndexConcurrently


class Migration(migrations.Migration):
    atomic = False  # the indexes are dropped CONCURRENTLY: reads and writes of the tables go on meanwhile

    dependencies = [
        ('documents', '0017_redundant_indexes'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        AlterFieldIndexConcurrently(
            model_name='collection',
            name='owner',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='owned_collections', to=settings.AUTH_USER_MODEL),
        ),
        AlterFieldIndexConcurrently(
            model_name='document',
            name='collection',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='documents', to='documents.collection'),
        ),
        AlterFieldIndexConcurrently(
            model_name='document',
            name='owner',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='documents', to=settings.AUTH_USER_MODEL),
        ),
        AlterFieldIndexConcurrently(
            model_name='interest',
            name='user',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
    ]
