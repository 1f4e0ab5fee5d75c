"""The history of the nightly HNSW recall sample."""

from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
    ]

    operations = [
        migrations.CreateModel(
            name='RecallSample',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('taken_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                ('distance', models.CharField(max_length=6)),
                ('queries', models.PositiveIntegerField()),
                ('k', models.PositiveSmallIntegerField()),
                ('ef_search', models.PositiveIntegerField()),
                ('mean', models.FloatField()),
                ('p10', models.FloatField(help_text='The 10th percentile: nine queries in ten found at least this share.')),
                ('minimum', models.FloatField()),
            ],
            options={
                'ordering': ['-taken_at', 'distance'],
                'constraints': [models.CheckConstraint(condition=models.Q(('mean__gte', 0), ('mean__lte', 1)), name='recall_mean_is_a_share')],
            },
        ),
    ]
