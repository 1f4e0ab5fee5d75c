"""documents/services.py, pipeline.py and store.py: upload checks, the pipeline, the atomic COPY store."""

import re

import pytest
from django.core.files.base import ContentFile
from django.db import connection

from documents import chunking, pipeline, services, store
from documents.embeddings import HashingBackend
from documents.exceptions import DimensionMismatch, DuplicateDocument, FileTooLarge, UnsupportedFileType
from documents.models import Chunk, ChunkVector, Collection, Document, EmbeddingSpace
from documents.spaces import backend_for
from tests import documents_factory as factory
from tests.conftest import wait_until_a_connection_waits_for_a_lock

pytestmark = pytest.mark.django_db


def upload(user, collection, path, **kwargs):
    return services.document_create(
        owner=user, collection=collection, file=ContentFile(path.read_bytes(), name=path.name),
        filename=path.name, **kwargs,
    )


def ingest_path(user, collection, path):
    document = upload(user, collection, path)
    return pipeline.document_ingest(document_id=document.pk)


def test_pdf_is_stored_as_chunks_with_page_numbers(user, collection, tmp_path):
    path = factory.make_pdf(tmp_path / "guide.pdf", [
        "Page one explains the onboarding checklist for new engineers.",
        "Page two describes the deployment pipeline and its approvals.",
        "Page three lists the on-call rotation and escalation contacts.",
    ])
    document = ingest_path(user, collection, path)
    assert document.status == Document.Status.READY, document.error
    assert document.progress == 1.0 and document.error == ""
    chunks = list(document.chunks.order_by("ordinal"))
    assert document.chunk_count == len(chunks) == 3
    assert [c.page for c in chunks] == [1, 2, 3]
    assert "deployment pipeline" in chunks[1].text
    assert all(c.collection_id == collection.pk and c.token_count > 0 for c in chunks)
    # One vector per chunk, in the collection's active space (the configured hashing-384 one), with its copies.
    vectors = ChunkVector.objects.filter(chunk__in=chunks)
    assert set(vectors.values_list("space__name", "collection_id", "document_id", "distance")) == {
        ("hashing-384", collection.pk, document.pk, "cosine")
    }
    assert vectors.count() == 3 and len(vectors.first().embedding) == 384


def test_full_text_vector_is_generated_for_stored_chunks(user, collection, tmp_path):
    path = factory.make_text(tmp_path / "notes.txt", "Escalations go to the duty manager on weekends.")
    document = ingest_path(user, collection, path)
    assert Chunk.objects.filter(document=document, search_vector="escalation").count() == 1


def test_reingest_replaces_chunks_without_duplicates(user, collection, tmp_path):
    path = factory.make_text(tmp_path / "long.txt", "A sentence about retention policies. " * 400)
    document = ingest_path(user, collection, path)
    first_ids = set(document.chunks.values_list("id", flat=True))
    again = pipeline.document_ingest(document_id=document.pk)
    assert again.status == Document.Status.READY
    ordinals = list(again.chunks.values_list("ordinal", flat=True))
    assert len(ordinals) == len(set(ordinals)) == again.chunk_count == len(first_ids)
    assert first_ids.isdisjoint(again.chunks.values_list("id", flat=True))


def test_bad_file_fails_with_reason_and_leaves_other_documents_untouched(user, collection, tmp_path):
    good = ingest_path(user, collection, factory.make_text(tmp_path / "good.txt", "Holiday policy text. " * 50))
    chunks_before = list(good.chunks.values_list("id", "text"))
    bad = ingest_path(user, collection, factory.make_encrypted_pdf(tmp_path / "locked.pdf"))
    assert bad.status == Document.Status.FAILED
    assert "password-protected" in bad.error
    assert bad.chunks.count() == 0
    good.refresh_from_db()
    assert good.status == Document.Status.READY
    assert list(good.chunks.values_list("id", "text")) == chunks_before


def test_image_only_pdf_explains_there_is_no_text(user, collection, tmp_path):
    document = ingest_path(user, collection, factory.make_image_only_pdf(tmp_path / "scan.pdf"))
    assert document.status == Document.Status.FAILED
    assert "scanned images" in document.error and "OCR" in document.error


def test_renamed_executable_is_refused_with_the_supported_types(user, collection, tmp_path):
    path = tmp_path / "invoice.pdf"
    path.write_bytes(b"\x7fELF\x02\x01\x01" + b"\x00" * 500)
    with pytest.raises(UnsupportedFileType, match="Supported formats: PDF"):
        upload(user, collection, path)
    assert Document.objects.count() == 0  # refused at upload, not stored and failed later


def test_empty_upload_fails_at_once_without_queueing(user, collection, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        document = services.document_create(
            owner=user, collection=collection, file=ContentFile(b"", name="empty.txt"), filename="empty.txt"
        )
    assert [callback.queue for callback in callbacks] == [False]  # its one callback keeps the file, queues nothing
    assert document.status == Document.Status.FAILED and "empty" in document.error


def test_upload_queues_ingestion_after_commit(user, collection, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        services.document_create(
            owner=user, collection=collection, file=ContentFile(b"hello", name="a.txt"), filename="a.txt"
        )
    assert len(callbacks) == 1


def test_same_file_twice_in_a_collection_is_refused_with_its_name(user, collection):
    services.document_create(owner=user, collection=collection, file=ContentFile(b"same", name="a.txt"))
    with pytest.raises(DuplicateDocument) as caught:
        services.document_create(owner=user, collection=collection, file=ContentFile(b"same", name="b.txt"))
    assert "already in the collection" in str(caught.value) and "“a”" in str(caught.value)


def test_same_file_in_another_collection_is_fine(user, collection):
    other = services.collection_for_upload(user=user, name="Other")
    services.document_create(owner=user, collection=collection, file=ContentFile(b"same", name="a.txt"))
    services.document_create(owner=user, collection=other, file=ContentFile(b"same", name="a.txt"))
    assert Document.objects.filter(sha256__isnull=False).count() == 2


def test_oversized_upload_is_refused_with_the_limit(user, collection, settings):
    settings.MAX_UPLOAD_BYTES = 1024
    with pytest.raises(FileTooLarge) as caught:
        services.document_create(owner=user, collection=collection, file=ContentFile(b"x" * 4096, name="big.txt"))
    assert caught.value.status_code == 413 and "1.0 KB" in str(caught.value)
    assert Document.objects.count() == 0


def test_hostile_filenames_are_cleaned_and_never_reach_the_file_system(user, collection):
    name = "../../etc/<script>alert(1)</script>" + "ü" * 300 + ".txt"
    document = services.document_create(owner=user, collection=collection, file=ContentFile(b"text", name=name))
    assert "/" not in document.original_filename and len(document.original_filename) <= 200
    assert document.original_filename.endswith(".txt")
    assert document.file.name == f"documents/{document.sha256[:2]}/{document.sha256}"


def test_dimension_mismatch_fails_the_document_with_a_clear_reason(user, collection, tmp_path, monkeypatch):
    path = factory.make_text(tmp_path / "a.txt", "Some text to embed.")
    document = upload(user, collection, path)
    # A space whose model makes vectors of another length than the space says (a misdeclared space).
    wrong = EmbeddingSpace.objects.create(name="hashing-512-as-384", backend="hashing", model="hashing-512",
                                          dimensions=384)
    Collection.objects.filter(pk=collection.pk).update(active_space=wrong)
    monkeypatch.setattr(pipeline, "backend_for", lambda space: HashingBackend(512) if space.pk == wrong.pk
                        else backend_for(space))
    result = pipeline.document_ingest(document_id=document.pk)
    assert result.status == Document.Status.FAILED
    assert result.error == DimensionMismatch.default_message  # the owner is told to ask an administrator
    assert "512" in result.error_detail and "384" in result.error_detail  # who sees what to change


def test_changing_the_configured_model_leaves_existing_collections_on_their_space(user, collection, tmp_path,
                                                                                settings):
    settings.EMBEDDING_DIMENSIONS = 512  # a new default space; the collection keeps searching its own
    document = ingest_path(user, collection, factory.make_text(tmp_path / "a.txt", "Some text to embed."))
    assert document.status == Document.Status.READY, document.error
    assert set(ChunkVector.objects.filter(document_id=document.pk).values_list("space__dimensions", flat=True)) == {
        384
    }
    fresh = Collection.objects.create(owner=user, name="Fresh")
    assert fresh.active_space.dimensions == 512 and fresh.active_space != collection.active_space


def test_store_is_all_or_nothing(user, collection, tmp_path):
    document = ingest_path(user, collection, factory.make_text(tmp_path / "a.txt", "Original text. " * 80))
    before = list(document.chunks.values_list("id", flat=True))
    drafts = chunking.chunk_sections([ingest_section("Replacement text that must not land.")])
    vectors = [[1.0] + [0.0] * 383]

    def explode():
        raise RuntimeError("crash after COPY, before commit")

    with pytest.raises(RuntimeError):
        store.store_chunks(document=document, drafts=drafts, vectors=vectors, on_stored=explode)
    assert list(document.chunks.values_list("id", flat=True)) == before
    document.refresh_from_db()
    assert document.status == Document.Status.READY


def test_each_chunk_is_stored_with_its_own_vector_whatever_the_drafts_order(user, collection, tmp_path):
    # The chunks' ids are taken from their sequence before the COPY, in the drafts' order: a draft's vector must
    # land on that draft's chunk, also when the drafts do not come in ordinal order.
    document = upload(user, collection, factory.make_text(tmp_path / "a.txt", "Vector order. " * 20))
    drafts = chunking.chunk_sections([ingest_section("First part. " * 300 + "Second part. " * 300)])
    assert len(drafts) >= 3
    drafts = drafts[::-1]
    vectors = [[0.0] * 384 for _ in drafts]
    for position, draft in enumerate(drafts):
        vectors[position][draft.ordinal] = 1.0
    store.store_chunks(document=document, drafts=drafts, vectors=vectors)
    stored = {
        vector.chunk.ordinal: list(vector.embedding)
        for vector in ChunkVector.objects.filter(document_id=document.pk).select_related("chunk")
    }
    assert sorted(stored) == sorted(draft.ordinal for draft in drafts)
    assert all(embedding.index(1.0) == ordinal for ordinal, embedding in stored.items())


def test_copy_uses_binary_format(user, collection, tmp_path):
    # The store goes through COPY: the row count rises by exactly the chunks written.
    document = upload(user, collection, factory.make_text(tmp_path / "a.txt", "Binary copy check. " * 100))
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM documents_chunk")
        assert cursor.fetchone()[0] == 0
    pipeline.document_ingest(document_id=document.pk)
    document.refresh_from_db()
    assert Chunk.objects.count() == document.chunk_count > 1


def ingest_section(text):
    from documents.parsing import Section

    return Section(text=text)


def unit_vectors(drafts):
    return [[1.0] + [0.0] * 383 for _ in drafts]


def test_reingest_keeps_answers_and_empties_their_citations_of_replaced_chunks(user, collection, tmp_path):
    from chat.models import Citation, Conversation, Message

    document = ingest_path(user, collection, factory.make_text(tmp_path / "a.txt", "Expense policy text. " * 60))
    old = document.chunks.order_by("ordinal").first()
    answer = Message.objects.create(conversation=Conversation.objects.create(owner=user), role="assistant",
                                    content="Receipts are required [1].")
    citation = Citation.objects.create(message=answer, chunk=old, index=1, document_id=document.pk,
                                       title=document.title)
    again = pipeline.document_ingest(document_id=document.pk)
    assert again.status == Document.Status.READY
    assert not Chunk.objects.filter(pk=old.pk).exists()
    citation.refresh_from_db()
    assert citation.chunk_id is None and Message.objects.filter(pk=answer.pk).exists()


def test_document_ingest_logs_the_seconds_of_each_stage(user, collection, tmp_path, caplog):
    path = factory.make_text(tmp_path / "a.txt", "Stage timing text. " * 40)
    with caplog.at_level("INFO", logger="documents.pipeline"):
        document = ingest_path(user, collection, path)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"document {document.pk} stored")]
    fields = dict(pair.split("=") for pair in line.split(": ", 1)[1].split())
    assert int(fields["chunks"]) == document.chunk_count
    assert {"seconds", "parse", "chunk", "embed", "store"} <= set(fields)
    stages = sum(float(fields[stage]) for stage in ("parse", "chunk", "embed", "store"))
    assert 0 < stages <= float(fields["seconds"]) + 0.001  # each figure is rounded to 0.1 ms


def test_small_plain_text_is_parsed_without_forking_the_worker(user, collection, tmp_path, monkeypatch):
    def no_fork(**kwargs):
        raise AssertionError("parse_file_guarded was called")

    monkeypatch.setattr(pipeline, "parse_file_guarded", no_fork)
    document = ingest_path(user, collection, factory.make_text(tmp_path / "note.txt", "Travel is booked by HR. " * 40))
    assert document.status == Document.Status.READY, document.error
    assert "booked by HR" in document.chunks.first().text


def test_other_kinds_and_larger_text_are_parsed_in_the_guarded_child(user, collection, tmp_path, monkeypatch):
    guarded = []
    original = pipeline.parse_file_guarded

    def spy(**kwargs):
        guarded.append(kwargs["filename"])
        return original(**kwargs)

    monkeypatch.setattr(pipeline, "parse_file_guarded", spy)
    monkeypatch.setattr(pipeline, "INLINE_TEXT_MAX_BYTES", 1000)
    small = ingest_path(user, collection, factory.make_text(tmp_path / "small.txt", "Short. " * 20))
    large = ingest_path(user, collection, factory.make_text(tmp_path / "large.txt", "Longer text here. " * 100))
    markdown_path = tmp_path / "guide.md"
    markdown_path.write_text("# Guide\n\nOn-call rotation and escalation contacts.\n")
    markdown = ingest_path(user, collection, markdown_path)
    assert [d.status for d in (small, large, markdown)] == [Document.Status.READY] * 3
    assert guarded == ["large.txt", "guide.md"]


def progress_writes(queries):
    return [float(q["sql"].split('"progress" = ')[1].split(",")[0]) for q in queries
            if q["sql"].startswith('UPDATE "documents_document" SET "progress" = ')]


def test_a_short_document_reaches_ready_without_progress_writes_in_between(user, collection, tmp_path, monkeypatch):
    from django.test.utils import CaptureQueriesContext

    monkeypatch.setattr(pipeline, "PROGRESS_WRITE_SECONDS", 3600)
    document = upload(user, collection, factory.make_text(tmp_path / "a.txt", "A short note. " * 30))
    with CaptureQueriesContext(connection) as queries:
        document = pipeline.document_ingest(document_id=document.pk)
    assert document.status == Document.Status.READY and document.progress == 1.0
    assert progress_writes(queries) == []


def test_progress_is_written_after_parsing_and_each_batch_when_enough_time_passed(
    user, collection, tmp_path, monkeypatch, settings
):
    from django.test.utils import CaptureQueriesContext

    monkeypatch.setattr(pipeline, "PROGRESS_WRITE_SECONDS", 0)
    settings.EMBEDDING_BATCH_SIZE = 2
    path = factory.make_text(tmp_path / "long.txt", "A sentence about retention policies. " * 400)
    document = upload(user, collection, path)
    with CaptureQueriesContext(connection) as queries:
        document = pipeline.document_ingest(document_id=document.pk)
    written = progress_writes(queries)
    batches = -(-document.chunk_count // 2)
    # After parsing, after each batch, and as storing starts (the page shows each stage).
    assert document.chunk_count > 2 and len(written) == 1 + batches + 1
    assert written[0] == 0.05 and written == sorted(written) and written[-1] == pytest.approx(0.95)
    assert document.progress == 1.0


@pytest.mark.django_db(transaction=True)
def test_store_locks_the_document_row_and_never_blocks_uploads_into_its_collection(user, collection, tmp_path):
    from django.db import OperationalError, connections

    document = upload(user, collection, factory.make_text(tmp_path / "a.txt", "Lock check. " * 20))
    drafts = chunking.chunk_sections([ingest_section("Stored while another connection tries to lock.")])
    seen = {}

    def try_locks_from_another_connection():
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                # The collection's BM25 totals are updated (a no-key update), so uploads into it, which
                # take a key-share lock, go on while a document stores.
                for table, pk, lock in (("documents_document", document.pk, "UPDATE"),
                                        ("documents_collection", collection.pk, "KEY SHARE")):
                    try:
                        cursor.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR {lock} NOWAIT", [pk])
                        seen[table] = "free"
                    except OperationalError:
                        seen[table] = "locked"
        finally:
            other.close()

    store.store_chunks(document=document, drafts=drafts, vectors=unit_vectors(drafts),
                        on_stored=try_locks_from_another_connection)
    assert seen == {"documents_document": "locked", "documents_collection": "free"}


@pytest.mark.django_db(transaction=True)
def test_a_store_that_waited_for_another_replaces_what_that_one_stored(user, collection, tmp_path):
    import threading

    from django.db import connections

    document = upload(user, collection, factory.make_text(tmp_path / "a.txt", "Concurrent runs. " * 20))
    first = chunking.chunk_sections([ingest_section("The first run's text. " * 400)])
    second = chunking.chunk_sections([ingest_section("The second run's text.")])
    errors = []

    def second_run():
        try:
            store.store_chunks(document=document, drafts=second, vectors=unit_vectors(second))
        except Exception as error:  # reported by the assertion below
            errors.append(error)
        finally:
            connections.close_all()

    thread = threading.Thread(target=second_run)

    def start_the_second_and_let_it_wait_for_our_lock():
        thread.start()
        wait_until_a_connection_waits_for_a_lock("the second run")

    assert len(first) > 1
    store.store_chunks(document=document, drafts=first, vectors=unit_vectors(first),
                        on_stored=start_the_second_and_let_it_wait_for_our_lock)
    thread.join(timeout=60)
    assert not thread.is_alive() and errors == []
    chunks = Chunk.objects.filter(document=document)
    assert [chunk.text for chunk in chunks] == [draft.text for draft in second]
    assert ChunkVector.objects.filter(document_id=document.pk).count() == len(second)
    assert chunks.count() == len(second) == Document.objects.get(pk=document.pk).chunk_count


EXPECTED = {
    "good-117-pages.pdf": "ready",
    "good.docx": "ready",
    "good-wikipedia.html": "ready",
    "good-codeblock.md": "ready",
    "odd-latin1.md": "ready",
    "odd-corrupted-recoverable.pdf": "ready",
    "bad-encrypted.pdf": "password-protected",
    "bad-no-startxref.pdf": None,  # failed with a reason, or ready if recovered
    "bad-cyclic-pages.pdf": "ready",  # pypdf refuses it; PDFium reads the page that is there
    "bad-image-only.pdf": "scanned images",
    "bad-empty.txt": "empty",
}


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_shared_fixture_ends_ready_or_failed_with_a_reason(name, user, collection, fixtures_dir):
    document = upload(user, collection, fixtures_dir / name)
    if document.status == Document.Status.QUEUED:
        document = pipeline.document_ingest(document_id=document.pk)
    expected = EXPECTED[name]
    assert document.status in (Document.Status.READY, Document.Status.FAILED)
    if document.status == Document.Status.FAILED:
        assert len(document.error) > 10 and document.error.endswith(".")
    if expected == "ready":
        assert document.status == Document.Status.READY, document.error
        assert document.chunk_count > 0
    elif expected == "failed":
        assert document.status == Document.Status.FAILED
    elif expected is not None:
        assert document.status == Document.Status.FAILED and expected in document.error.lower()


@pytest.mark.shared
def test_shared_pdf_chunks_carry_page_numbers(user, collection, fixtures_dir):
    document = ingest_path(user, collection, fixtures_dir / "good-117-pages.pdf")
    pages = set(document.chunks.values_list("page", flat=True))
    assert None not in pages and min(pages) == 1 and max(pages) >= 100


@pytest.mark.shared
def test_shared_docx_keeps_headings_as_chunk_context(user, collection, fixtures_dir):
    document = ingest_path(user, collection, fixtures_dir / "good.docx")
    assert document.chunks.exclude(heading="").exists()


@pytest.mark.shared
def test_shared_latin1_markdown_has_no_mojibake(user, collection, fixtures_dir):
    document = ingest_path(user, collection, fixtures_dir / "odd-latin1.md")
    text = " ".join(document.chunks.values_list("text", flat=True))
    assert "Ã" not in text and any(ch in text for ch in "äöüÄÖÜß")


def fenced_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```\w*\n.*?^```$", markdown, flags=re.S | re.M)


@pytest.mark.shared
def test_shared_markdown_code_blocks_each_stay_whole_in_one_chunk(user, collection, fixtures_dir):
    path = fixtures_dir / "good-codeblock.md"
    document = ingest_path(user, collection, path)
    assert document.status == Document.Status.READY, document.error
    texts = list(document.chunks.order_by("ordinal").values_list("text", flat=True))
    blocks = fenced_blocks(path.read_text())
    assert len(blocks) == 3  # one HTML block, the same XML block twice
    for block in set(blocks):
        assert sum(text.count(block) for text in texts) >= blocks.count(block), block


@pytest.mark.shared
def test_shared_markdown_code_block_longer_than_a_chunk_is_split_only_between_lines(
    user, collection, fixtures_dir, settings,
):
    path = fixtures_dir / "good-codeblock.md"
    settings.CHUNK_SIZE_TOKENS = 60  # the HTML block (~90 tokens) no longer fits in one chunk
    document = ingest_path(user, collection, path)
    texts = list(document.chunks.order_by("ordinal").values_list("text", flat=True))
    html_block = fenced_blocks(path.read_text())[0]
    assert not any(html_block in text for text in texts)  # it was split ...
    lines = {line.strip() for line in path.read_text().splitlines()}
    cut = [line for text in texts for line in text.splitlines() if line.strip() not in lines]
    assert cut == [], "chunk boundaries fell inside these lines"  # ... but never inside a line
