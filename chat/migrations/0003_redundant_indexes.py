"""Two foreign-key indexes that only repeated the start of another index of their table (as documents 0017, 0018):

- ``chat_conversation (owner_id)``: the sidebar's ``(owner_id, updated_at DESC)``;
- ``chat_citation (message_id)``: ``unique_citation_index`` is ``(message_id, index)``.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from core.schema import AlterFieldIndexConcurrently


class Migration(migrations.Migration):
    atomic = False  # the indexes are dropped CONCURRENTLY: reads and writes of the tables go on meanwhile

    dependencies = [
        ('chat', '0002_citation_heading_and_place'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        AlterFieldIndexConcurrently(
            model_name='citation',
            name='message',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='citation_set', to='chat.message'),
        ),
        AlterFieldIndexConcurrently(
            model_name='conversation',
            name='owner',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='conversations', to=settings.AUTH_USER_MODEL),
        ),
    ]
