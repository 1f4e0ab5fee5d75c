import json
import time
from pathlib import Path

from celery import current_app
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from documents import pipeline, services
from documents.exceptions import DuplicateDocument
from documents.models import Document


class Command(BaseCommand):
    help = (
        "Import a BEIR-style corpus (JSON lines with _id, title, text) as documents of a collection, "
        "through the normal ingestion pipeline. Re-running skips documents already imported."
    )

    def add_arguments(self, parser):
        parser.add_argument("corpus", type=Path)
        parser.add_argument("--collection", required=True)
        parser.add_argument("--owner", help="Username of the collection's owner (default: the first superuser).")
        parser.add_argument("--limit", type=int, default=0, help="Import at most this many documents.")
        parser.add_argument(
            "--mode", choices=["auto", "worker", "inline"], default="auto",
            help="worker: queue for Celery and wait; inline: ingest in this process; "
            "auto: worker when one answers, else inline.",
        )

    def handle(self, *args, corpus: Path, collection: str, owner, limit: int, mode: str, **options):
        if not corpus.exists():
            raise CommandError(f"{corpus} does not exist.")
        user = self._owner(owner)
        target = services.collection_for_upload(user=user, name=collection)
        if mode == "auto":
            mode = "worker" if current_app.control.ping(timeout=1.0) else "inline"
        known = set(Document.objects.filter(collection=target).values_list("external_id", flat=True))
        created, skipped, queued_ids = 0, 0, []
        with corpus.open(encoding="utf-8") as lines:
            rows = [json.loads(line) for line in lines if line.strip()]
        if limit:
            rows = rows[:limit]
        for row in tqdm(rows, desc=f"Importing ({mode})", unit="doc", disable=None):
            external_id = str(row["_id"])
            if external_id in known:
                skipped += 1
                continue
            title = (row.get("title") or "").strip()
            body = f"{title}\n\n{row.get('text', '')}".strip() + "\n"
            try:
                document = services.document_create(
                    owner=user, collection=target, file=ContentFile(body.encode("utf-8")),
                    filename=f"{external_id}.txt", title=title or external_id, external_id=external_id,
                    metadata={"source": corpus.name}, enqueue=(mode == "worker"),
                )
            except DuplicateDocument:
                skipped += 1
                continue
            created += 1
            if mode == "inline":
                pipeline.document_ingest(document_id=document.pk)
            else:
                queued_ids.append(document.pk)
        if queued_ids:
            self._wait(queued_ids)
        stats = Document.objects.filter(collection=target)
        ready = stats.filter(status=Document.Status.READY).count()
        failed = stats.filter(status=Document.Status.FAILED).count()
        self.stdout.write(
            f"imported={created} skipped={skipped} ready={ready} failed={failed} "
            f"collection={target.name!r} (id {target.pk})"
        )

    def _owner(self, username):
        users = get_user_model().objects
        if username:
            user = users.filter(username=username).first()
            if user is None:
                raise CommandError(f"No user named {username!r}.")
            return user
        user = users.filter(is_superuser=True).order_by("pk").first()
        if user is None:
            raise CommandError("Pass --owner USERNAME (no superuser exists yet).")
        return user

    def _wait(self, ids):
        pending = Document.objects.filter(pk__in=ids).exclude(status__in=["ready", "failed"])
        with tqdm(total=len(ids), desc="Ingesting", unit="doc", disable=None) as bar:
            while True:
                left = pending.count()
                bar.n = len(ids) - left
                bar.refresh()
                if not left:
                    return
                time.sleep(1)
