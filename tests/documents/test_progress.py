"""Legible progress: stage, n/m chunks, pages, time left and the kind of each message, in the status JSON
(as a real worker writes it) and on the page (class names by kind)."""

import time
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from documents import pipeline, progress, queue, services
from documents.models import Collection, Document
from documents.spaces import default_space
from tests.documents_factory import make_pdf
from tests.openai_server import openai_server  # noqa: F401  (the fixture)


@pytest.fixture
def signed_in(client, user):
    client.force_login(user)
    return client


def status_of(client, document) -> dict:
    response = client.get(reverse("documents:status"), {"id": document.pk})
    assert response.status_code == 200
    [state] = response.json()["documents"]
    return state


def queued(user, collection, name="plan.txt", body=b"Quarterly plan notes.") -> Document:
    return services.document_create(
        owner=user, collection=collection, file=SimpleUploadedFile(name, body), enqueue=False
    )


@pytest.mark.django_db
def test_each_stage_says_what_the_run_does(signed_in, user, collection):
    document = queued(user, collection)
    assert status_of(signed_in, document)["progress_text"] == "Waiting for a worker"

    started = timezone.now()
    Document.objects.filter(pk=document.pk).update(
        status=Document.Status.PROCESSING, stage=Document.Stage.PARSING, stage_started_at=started
    )
    state = status_of(signed_in, document)
    assert (state["stage"], state["progress_text"], state["eta_seconds"]) == ("parsing", "Parsing… · 0%", None)

    # 120 of 900 chunks in 60 s: 780 more at that rate take 390 s, i.e. about 6 minutes (6.5 rounds to 6).
    Document.objects.filter(pk=document.pk).update(
        stage=Document.Stage.EMBEDDING,
        stage_started_at=timezone.now() - timedelta(seconds=60),
        page_count=12,
        chunks_total=900,
        chunks_embedded=120,
        progress=0.05 + 0.9 * 120 / 900,
    )
    state = status_of(signed_in, document)
    assert state["stage"] == "embedding"
    assert (state["chunks_done"], state["chunks_total"], state["pages"], state["percent"]) == (120, 900, 12, 17)
    assert 389 <= state["eta_seconds"] <= 392
    assert state["progress_text"] == "Embedding 120/900 chunks · 17% · 12 pages · about 6 min left"

    Document.objects.filter(pk=document.pk).update(stage=Document.Stage.STORING, progress=0.95)
    state = status_of(signed_in, document)
    assert (state["stage"], state["progress_text"]) == ("storing", "Storing… · 95% · 12 pages")

    pipeline.document_ingest(document_id=document.pk)  # the real store sets what a finished run shows
    state = status_of(signed_in, document)
    assert (state["status"], state["stage"], state["percent"], state["message_kind"]) == ("ready", "", 100, "success")
    assert state["progress_text"] == ""  # a text file has no pages; its chunk count is shown apart


def test_time_left_reads_as_people_say_it():
    seconds = (1, 59, 60, 89, 91, 3569, 3599, 3600, 7500)
    assert [progress.duration(s) for s in seconds] == [
        "1 s", "59 s", "1 min", "1 min", "2 min", "59 min", "1 h 00 min", "1 h 00 min", "2 h 05 min"
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (Document.Status.FAILED, "The file is broken.", "error"),
        (Document.Status.READY, "", "success"),
        (Document.Status.QUEUED, queue.QUEUE_UNREACHABLE, "warning"),
        (Document.Status.QUEUED, "", "info"),
        (Document.Status.CANCELLED, "Cancelled by alice.", "info"),
    ],
)
def test_a_rows_message_is_styled_by_its_kind(signed_in, user, collection, status, error, kind):
    document = queued(user, collection)
    Document.objects.filter(pk=document.pk).update(status=status, error=error)
    assert status_of(signed_in, document)["message_kind"] == kind
    page = signed_in.get(reverse("documents:list")).content.decode()
    assert f'<div class="error message-{kind}" data-kind="{kind}">{error}</div>' in page


@pytest.mark.django_db
def test_an_empty_file_is_reported_as_an_error_not_a_success(signed_in, user, collection):
    # Without JavaScript: the flash message is an error.
    response = signed_in.post(
        reverse("documents:list"),
        {"files": [SimpleUploadedFile("empty.txt", b"")], "collection": collection.name},
        follow=True,
    )
    page = response.content.decode()
    assert '<li class="message error">empty.txt: The file is empty' in page
    assert "queued for processing" not in page
    assert 'class="message success"' not in page
    # With it: the file's result carries the kind the page colours its line by.
    response = signed_in.post(
        reverse("documents:list"),
        {"files": [SimpleUploadedFile("empty2.txt", b"")], "collection": "Other"},
        HTTP_ACCEPT="application/json",
    )
    [result] = response.json()["results"]
    assert result["document"]["status"] == "failed" and result["document"]["message_kind"] == "error"
    assert 'class="error message-error"' in result["row_html"]


@pytest.mark.django_db
def test_a_normal_upload_is_still_a_success(signed_in, collection):
    response = signed_in.post(
        reverse("documents:list"),
        {"files": [SimpleUploadedFile("a.txt", b"alpha")], "collection": collection.name},
        follow=True,
    )
    assert '<li class="message success">a.txt: queued for processing.</li>' in response.content.decode()


def test_the_real_worker_reports_pages_and_chunks_as_it_embeds(
    celery_worker,
    client,
    user,
    collection,
    settings,
    openai_server,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    # Embedding by an (OpenAI-protocol) service answering each call after 0.4 s, one chunk per call, and
    # every step written: the polls see the run embed chunk after chunk.
    settings.EMBEDDING_BACKEND, settings.EMBEDDING_MODEL = "openai", "text-embedding-3-small"
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = openai_server.url, "test-key"
    settings.EMBEDDING_BATCH_SIZE = 1
    openai_server.delay(0.4, times=20)
    monkeypatch.setattr(pipeline, "PROGRESS_WRITE_SECONDS", 0.0)
    # The collection searches (and its documents are embedded in) the space of the model configured now.
    Collection.objects.filter(pk=collection.pk).update(active_space=default_space())
    client.force_login(user)
    pages = [
        " ".join(f"Page {n} rule {i}: trains are booked for trips under {i + 3} hours." for i in range(40))
        for n in range(3)
    ]
    path = make_pdf(tmp_path / "policy.pdf", pages)
    document = services.document_create(
        owner=user,
        collection=collection,
        filename="policy.pdf",
        file=SimpleUploadedFile("policy.pdf", path.read_bytes()),
    )
    seen = []
    for _ in range(600):
        state = status_of(client, document)
        seen.append(state)
        if state["status"] not in ("queued", "processing"):
            break
        time.sleep(0.05)
    final = seen[-1]
    assert final["status"] == "ready", final
    assert (final["pages"], final["percent"], final["progress_text"], final["stage"]) == (3, 100, "3 pages", "")
    total = final["chunk_count"]
    embedding = [state for state in seen if state["stage"] == "embedding"]
    assert embedding, [state["progress_text"] for state in seen]
    middle = [state for state in embedding if 0 < state["chunks_done"] < total]
    assert middle, [state["progress_text"] for state in seen]
    state = middle[-1]
    assert state["chunks_total"] == total and state["pages"] == 3 and state["eta_seconds"] >= 1
    assert state["progress_text"].startswith(f"Embedding {state['chunks_done']}/{total} chunks · ")
    assert "· 3 pages · about " in state["progress_text"]
    # Percent never goes back, and the stages come in order.
    percents = [state["percent"] for state in seen if state["status"] == "processing"]
    assert percents == sorted(percents)
    order = ["parsing", "embedding", "storing"]
    stages = [order.index(state["stage"]) for state in seen if state["stage"]]
    assert stages == sorted(stages)
