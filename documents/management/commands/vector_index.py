from django.core.management.base import BaseCommand, CommandError

from documents.exceptions import IndexBuildRefused
from documents.models import Distance, EmbeddingSpace
from documents.search import indexes


class Command(BaseCommand):
    help = (
        "(Re)build the vector index of a distance in an embedding space, sized for the data: HNSW (the default) "
        "or IVFFlat (after the documents are in: its lists are learnt from the rows). One kind per space and "
        "distance."
    )

    def add_arguments(self, parser):
        parser.add_argument("--type", dest="kind", choices=indexes.KINDS, default="hnsw")
        parser.add_argument("--distance", choices=[*Distance.values, "all"], default="cosine")
        parser.add_argument("--space", help="the embedding space's name (default: the configured default space)")
        parser.add_argument("--lists", type=int, help="IVFFlat lists (default: rows/1000, √rows above 1M rows)")
        parser.add_argument("--maintenance-work-mem", help="e.g. 4GB (default: enough for the data)")
        parser.add_argument("--m", type=int, help="HNSW m (default: 16, 24 from 500k rows, 32 from 5M)")
        parser.add_argument("--ef-construction", type=int,
                            help="HNSW ef_construction (default: 64, 128 from 500k rows, 200 from 5M)")
        parser.add_argument("--workers", type=int, help="parallel maintenance workers (default: cores - 1)")

    def handle(self, *args, kind, distance, space, lists, maintenance_work_mem, workers, m, ef_construction,
               **options):
        distances = Distance.values if distance == "all" else [distance]
        chosen = None
        if space:
            chosen = EmbeddingSpace.objects.exclude(status=EmbeddingSpace.Status.RETIRED).filter(name=space).first()
            if chosen is None:
                raise CommandError(f"No embedding space is named {space!r} (manage.py embedding_spaces list).")
        for each in distances:
            try:
                built = indexes.vector_index_build(kind=kind, distance=each, space=chosen, lists=lists,
                                                   maintenance_work_mem=maintenance_work_mem, workers=workers,
                                                   m=m, ef_construction=ef_construction)
            except IndexBuildRefused as error:
                raise CommandError(str(error)) from None
            graph = f", m={built.m}, ef_construction={built.ef_construction}"
            detail = f", lists={built.lists}" if built.lists else graph
            self.stdout.write(
                f"{built.name}: {built.kind} over {built.rows:,} {each} vectors of space {built.space}{detail} "
                f"in {built.seconds:.1f} s, "
                f"{built.megabytes:.0f} MB (maintenance_work_mem={built.maintenance_work_mem}, "
                f"{built.workers} parallel worker(s))"
            )
            if built.lists:
                self.stdout.write(
                    f"Searches probe √lists = {built.probes} lists by default (IVFFLAT_PROBES=0); raise "
                    "IVFFLAT_PROBES for recall, lower it for speed. Rebuild after the data grows a lot."
                )
