"""The documents library page at 10,000 documents: ours (filtered, sorted, 50 a page) against the bare SQL of
the same page and against the former rendering of every document on one page.

One user reads 10,000 documents (three collections of their own and one shared with them; mixed statuses,
file types and sizes). Each page is requested through Django's test client in this process, so a time is the
server's whole work for the request (middleware, session, queries, template) without the network. "bare SQL"
runs the page's two statements (the count and the page's rows, as the ORM writes them) on the same connection:
the floor for the database's part. "unpaged" is the same template with every matching document on one page,
as the library rendered before paging. The ways alternate, so load from elsewhere falls on all of them.

    .venv/bin/python bench/library_page.py            # 10,000 documents, recorded in bench/BENCHMARKS.md
    .venv/bin/python bench/library_page.py --quick    # 1,000 documents, a smoke run, not recorded
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import random
import statistics
import time

import _common

PAGES = {  # what the page is asked for -> its query string
    "newest first (the default)": "",
    "search + status filter": "q=report&status=ready",
    "by name, page 100": "sort=name&page=100",
    "one collection, by size": "collection={collection}&sort=-size",
    "file type PDF, oldest first": "type=pdf&sort=date",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 documents, few requests, not recorded")
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=40, help="per page and way")
    parser.add_argument("--label", default="", help="what this run measures, added to the title (e.g. 'before: ...')")
    args = parser.parse_args()
    count = 1_000 if args.quick else args.documents
    requests = 5 if args.quick else args.requests

    _common.setup_django("bench_library_page")
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from documents import selectors

    user, collection = library(count)
    client = Client(SERVER_NAME="localhost")
    client.force_login(user)
    pages = {name: "/documents/?" + query.format(collection=collection.pk) for name, query in PAGES.items()}

    def ours(url: str) -> int:
        response = client.get(url)
        assert response.status_code == 200, response.status_code
        return len(response.content)

    statements: dict[str, list[str]] = {}
    for name, url in pages.items():  # warm, and the statements the page runs for its documents
        with CaptureQueriesContext(connection) as captured:
            ours(url)
        # The list's own two (the count and the page), not the recommendations the first page also shows.
        # (Those of the documents table itself: the upload form's collections read their last upload in a subquery.)
        statements[name] = [q["sql"] for q in captured.captured_queries if q["sql"].startswith(
            ('SELECT COUNT(*) AS "__count" FROM "documents_document"', 'SELECT "documents_document".'))]
        assert len(statements[name]) == 2, statements[name]

    def bare_sql(name: str) -> int:
        with connection.cursor() as cursor:
            for sql in statements[name]:
                cursor.execute(sql)
                cursor.fetchall()
        return 0

    def unpaged(url: str) -> int:
        size, selectors.LIBRARY_PAGE_SIZE = selectors.LIBRARY_PAGE_SIZE, 10**9
        try:
            return ours(url)
        finally:
            selectors.LIBRARY_PAGE_SIZE = size

    rows = [HEADER]
    for name, url in pages.items():
        rows.append(
            compare(
                name,
                functools.partial(ours, url),
                functools.partial(bare_sql, name),
                functools.partial(unpaged, url),
                requests,
            )
        )
    rows.append(document_page(client, novel(user, 300 if args.quick else 2_000), requests, statements=[]))
    connection.close()
    _common.report(
        args.quick,
        "Documents library page: paged vs. the bare SQL and the former unpaged rendering (bench/library_page.py"
        + (f", {args.label})" if args.label else ")"),
        f"one process, DEBUG=true (as the other in-process benches; templates are cached either way), Django's test "
        f"client (the server's whole work, no network), one user reading {count:,} documents in 4 collections; "
        f"{requests} requests per page for ours and the bare SQL, fewer for unpaged; the ways alternate. "
        f"Load average at the end: {os.getloadavg()[0]:.1f} (2 cores shared).",
        rows,
        "The page runs 7 statements whatever the number of documents (session, user, collections, count, page, and "
        "on the first page the two of 'Recommended for you'; tests/documents/test_views.py checks 5 documents "
        "against 50). The bare SQL column is the count and the page. "
        "The last row is a document's page opened at a cited passage in the middle of a long document: ours shows "
        "the 50 passages of its page, unpaged all of them (as the page did before).",
    )


def document_page(client, document, requests: int, statements: list[str]) -> list[str]:
    """A document's page at a passage in its middle: ours (its page of 50) against every passage on one page."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from documents import selectors

    middle = document.chunks.get(ordinal=document.chunk_count // 2)
    url = f"/documents/{document.pk}/?chunk={middle.pk}"

    def ours() -> int:
        response = client.get(url)
        assert response.status_code == 200 and f'id="chunk-{middle.pk}" class="chunk highlighted"' in response.text
        return len(response.content)

    def unpaged() -> int:
        size, selectors.CHUNK_PAGE_SIZE = selectors.CHUNK_PAGE_SIZE, 10**9
        try:
            return ours()
        finally:
            selectors.CHUNK_PAGE_SIZE = size

    def bare_sql() -> int:
        with connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)
                cursor.fetchall()
        return 0

    with CaptureQueriesContext(connection) as captured:
        ours()
    statements += [q["sql"] for q in captured.captured_queries if "documents_chunk" in q["sql"]]
    return compare(
        f"a document of {document.chunk_count:,} passages, at its middle one", ours, bare_sql, unpaged, requests
    )


HEADER = [
    "page",
    "ours p50 ms",
    "ours p95 ms",
    "ours CPU p50 ms",
    "bare SQL p50 ms",
    "unpaged p50 ms",
    "HTML ours / unpaged",
]


def compare(name: str, ours, bare_sql, unpaged, requests: int) -> list[str]:
    """A row of HEADER: the ways alternate; unpaged runs fewer times (seconds each at 10,000 documents).

    "CPU" is this process's CPU time for the request (time.process_time): the server's own work, which other
    processes on the machine do not inflate as they do the wall-clock time.
    """
    timings: dict[str, list[float]] = {"ours": [], "cpu": [], "sql": [], "unpaged": []}
    sizes = {"ours": 0, "unpaged": 0}
    for n in range(requests):
        ways = [("ours", ours), ("sql", bare_sql)] + ([("unpaged", unpaged)] if n < max(2, requests // 10) else [])
        for way, call in ways if n % 2 == 0 else reversed(ways):
            began, cpu = time.perf_counter(), time.process_time()
            size = call()
            timings[way].append((time.perf_counter() - began) * 1000)
            if way == "ours":
                timings["cpu"].append((time.process_time() - cpu) * 1000)
            if way in sizes:
                sizes[way] = size
    ordered = sorted(timings["ours"])
    return [
        name,
        f"{statistics.median(ordered):.1f}",
        f"{ordered[int(0.95 * (len(ordered) - 1))]:.1f}",
        f"{statistics.median(timings['cpu']):.1f}",
        f"{statistics.median(timings['sql']):.1f}",
        f"{statistics.median(timings['unpaged']):.0f}",
        f"{sizes['ours'] / 1024:.0f} KB / {sizes['unpaged'] / 1024:.0f} KB",
    ]


def novel(user, chunks: int):
    """A ready document of ``chunks`` passages of about 1,500 characters (made once), in a collection of its own."""
    import numpy as np

    from documents.models import Chunk, Collection, Document
    from documents.spaces.vectors import write_vectors

    collection, _ = Collection.objects.get_or_create(owner=user, name="Novels")
    document = Document.objects.filter(collection=collection).first()
    if document is not None and document.chunk_count == chunks:
        return document
    Document.objects.filter(collection=collection).delete()
    document = Document.objects.create(
        owner=user,
        collection=collection,
        title="A long novel",
        original_filename="novel.txt",
        size=chunks * 1500,
        sha256="f" * 64,
        file="documents/bench/novel",
        status="ready",
        progress=1.0,
        chunk_count=chunks,
    )
    rng = random.Random(11)
    words = "the sea was calm and the lighthouse keeper wrote in his log every night before the storm came".split()
    created = Chunk.objects.bulk_create(
        [
            Chunk(
                document=document,
                collection=collection,
                ordinal=n,
                page=n // 3 + 1,
                heading=f"Chapter {n // 40 + 1}",
                text=" ".join(rng.choice(words) for _ in range(280)),
            )
            for n in range(chunks)
        ],
        batch_size=500,
    )
    # Their vectors, in the collection's embedding space (as the store writes them).
    space = collection.active_space
    assert space is not None  # Collection.save() gives it one
    write_vectors(
        space=space,
        rows=(
            (chunk.pk, collection.pk, document.pk, collection.distance,
             np.asarray([rng.random() for _ in range(space.dimensions)], dtype=np.float32))
            for chunk in created
        ),
    )
    return document


def library(count: int):
    """The bench's user with ``count`` documents (made once, kept in the bench database), and one collection."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from documents.models import Collection, Document

    users = get_user_model().objects
    user, _ = users.get_or_create(username="library-bench")
    other, _ = users.get_or_create(username="library-bench-colleague")
    own = [Collection.objects.get_or_create(owner=user, name=name)[0] for name in ("Handbook", "Reports", "Archive")]
    shared, _ = Collection.objects.get_or_create(owner=other, name="Team")
    shared.members.add(user)
    readable = Document.objects.filter(collection__in=[*own, shared])
    if readable.count() == count:
        return user, own[1]
    Document.objects.filter(collection__in=[*own, shared]).delete()
    rng = random.Random(7)
    words = ["report", "policy", "minutes", "plan", "budget", "travel", "onboarding", "contract", "notes", "review"]
    extensions = [".pdf", ".docx", ".txt", ".md", ".html"]
    statuses = ["ready"] * 8 + ["failed", "queued"]
    now = timezone.now()
    documents = []
    for n in range(count):
        collection = shared if n % 5 == 4 else own[n % 3]
        title = f"{rng.choice(words).title()} {rng.choice(words)} {n}"
        status = rng.choice(statuses)
        documents.append(
            Document(
                owner=other if collection is shared else user,
                collection=collection,
                title=title,
                original_filename=title + rng.choice(extensions),
                size=rng.randint(0, 5_000_000),
                sha256=f"{n:064x}",
                file=f"documents/bench/{n}",
                status=status,
                progress=1.0 if status != "queued" else 0,
                chunk_count=rng.randint(1, 400) if status == "ready" else 0,
                error="The PDF is damaged and cannot be read." if status == "failed" else "",
            )
        )
    Document.objects.bulk_create(documents, batch_size=2000)
    # created_at is set on insert: spread the dates so that sorting by date means something.
    Document.objects.filter(collection__in=[*own, shared]).update(created_at=now)
    for start in range(0, count, 2000):
        ids = list(readable.order_by("id").values_list("id", flat=True)[start : start + 2000])
        Document.objects.filter(id__in=ids[: len(ids) // 2]).update(created_at=now - datetime.timedelta(days=start + 1))
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE documents_document")
    return user, own[1]


if __name__ == "__main__":
    main()
