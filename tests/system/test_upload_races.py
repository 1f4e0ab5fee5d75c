"""Concurrent uploads of one file and rolled-back uploads: one document, clear 409s, no file left behind.

The race is real: eight threads post the same file at once to the live (threaded) server, through the
API and through the documents page, a few times over. A rollback for another reason than the duplicate
is provoked in PostgreSQL itself (a trigger), or by the caller's own transaction.
"""

from __future__ import annotations

import secrets
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import DatabaseError, connection, transaction
from django.test import Client

from core.models import ApiToken
from documents import services
from documents.models import Collection, Document

UPLOADS = 8
TRIALS = 3


def stored_files() -> list[Path]:
    return [path for path in Path(settings.MEDIA_ROOT).rglob("*") if path.is_file()]


def all_at_once(send) -> list[requests.Response]:
    """``send()`` from UPLOADS threads released together; their answers."""
    start = threading.Barrier(UPLOADS)
    answers: list[requests.Response] = []

    def upload():
        start.wait()
        answers.append(send())

    threads = [threading.Thread(target=upload) for _ in range(UPLOADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == UPLOADS, "an upload never answered"
    return answers


def assert_one_accepted_and_the_rest_refused(answers, existing_id) -> None:
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [202] + [409] * (UPLOADS - 1), [(a.status_code, a.text[:300]) for a in answers]
    for answer in answers:
        assert answer.headers["Content-Type"].startswith("application/json")
        if answer.status_code == 409:
            assert existing_id(answer.json()) is not None


@pytest.mark.django_db(transaction=True)
def test_concurrent_api_uploads_of_one_file_store_it_once(celery_worker, live_server, user):
    token = ApiToken.issue(user=user)[1]
    for trial in range(TRIALS):
        body = f"Trial {trial}: the same small file, sent eight times at once.".encode()

        answers = all_at_once(lambda body=body: requests.post(
            live_server.url + "/api/v1/documents", headers={"Authorization": f"Bearer {token}"},
            files={"file": ("same.txt", body, "text/plain")}, data={"collection": "Race"}, timeout=60,
        ))

        assert_one_accepted_and_the_rest_refused(answers, lambda problem: problem.get("existing_id"))
        (winner,) = Document.objects.filter(collection__name="Race", original_filename="same.txt",
                                            size=len(body), sha256=services.sha256_of(ContentFile(body)))
        refused = [answer.json() for answer in answers if answer.status_code == 409]
        assert {problem["existing_id"] for problem in refused} == {winner.pk}
        assert all("already in the collection" in problem["detail"] for problem in refused)
        assert Document.objects.count() == trial + 1
        assert len(stored_files()) == trial + 1, stored_files()  # no copy left behind by a refused upload
        assert Path(winner.file.path).read_bytes() == body


@pytest.mark.django_db(transaction=True)
def test_concurrent_page_uploads_of_one_file_store_it_once(celery_worker, live_server, user):
    browser = Client()
    browser.force_login(user)
    csrf = secrets.token_hex(16)  # a cookie and the same value in the header: what the page's fetch sends
    cookies = {settings.SESSION_COOKIE_NAME: browser.cookies[settings.SESSION_COOKIE_NAME].value,
               settings.CSRF_COOKIE_NAME: csrf}
    for trial in range(TRIALS):
        body = f"Trial {trial}: dropped eight times on the documents page at once.".encode()

        answers = all_at_once(lambda body=body: requests.post(
            live_server.url + "/documents/", cookies=cookies,
            headers={"Accept": "application/json", "X-CSRFToken": csrf, "Referer": live_server.url + "/documents/"},
            files={"files": ("same.txt", body, "text/plain")}, data={"collection": "Race"}, timeout=60,
        ))

        assert_one_accepted_and_the_rest_refused(answers, lambda data: data["results"][0].get("existing_id"))
        (winner,) = Document.objects.filter(collection__name="Race", sha256=services.sha256_of(ContentFile(body)))
        for answer in answers:
            (result,) = answer.json()["results"]
            if answer.status_code == 202:
                assert result["ok"] and result["document"]["id"] == winner.pk
            else:
                assert not result["ok"] and result["existing_id"] == winner.pk
                assert "already in the collection" in result["detail"]
        assert Document.objects.count() == trial + 1
        assert len(stored_files()) == trial + 1, stored_files()


@contextmanager
def audit_refuses(action: str):
    """PostgreSQL refuses the audit events of ``action`` (a trigger): the transaction writing one fails."""
    with connection.cursor() as cursor:
        cursor.execute(f"""
            CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'audit store unavailable'; END $$;
            CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_auditevent
            FOR EACH ROW WHEN (NEW.action = '{action}') EXECUTE FUNCTION refuse_audit();
        """)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER refuse_audit ON audit_auditevent; DROP FUNCTION refuse_audit()")


@pytest.mark.django_db(transaction=True)
def test_an_upload_whose_transaction_fails_after_storing_the_file_leaves_no_file(user, collection):
    with audit_refuses("upload"), pytest.raises(DatabaseError, match="audit store unavailable"):
        # Its last write fails, after its file was stored.
        services.document_create(owner=user, collection=collection, file=ContentFile(b"kept?", name="a.txt"),
                               enqueue=False)
    assert Document.objects.count() == 0
    assert stored_files() == []


@pytest.mark.django_db(transaction=True)
def test_an_admin_upload_whose_page_fails_after_the_upload_leaves_no_file(client, admin_user, collection):
    client.raise_request_exception = False
    client.force_login(admin_user)
    with audit_refuses("admin_add"):  # the admin's own log entry, written after the upload, in its transaction
        response = client.post("/admin/documents/document/add/", {
            "collection": collection.pk, "file": ContentFile(b"memo text", name="memo.txt"), "metadata": "{}",
        })
    assert response.status_code == 500
    assert Document.objects.count() == 0
    assert stored_files() == []


@pytest.mark.django_db(transaction=True)
def test_an_upload_inside_a_transaction_the_caller_rolls_back_leaves_no_file(user, collection):
    class CallerChangedItsMind(Exception):
        pass

    with pytest.raises(CallerChangedItsMind), transaction.atomic():
        document = services.document_create(owner=user, collection=collection, enqueue=False,
                                          file=ContentFile(b"rolled back", name="a.txt"))
        assert Path(document.file.path).read_bytes() == b"rolled back"  # stored while the transaction is open
        raise CallerChangedItsMind

    assert Document.objects.count() == 0
    assert stored_files() == []
    # The same caller committing keeps both the row and its file.
    with transaction.atomic():
        document = services.document_create(owner=user, collection=collection, enqueue=False,
                                          file=ContentFile(b"committed", name="b.txt"))
    assert Path(Document.objects.get().file.path).read_bytes() == b"committed"
    assert stored_files() == [Path(document.file.path)]


@pytest.mark.django_db(transaction=True)
def test_an_upload_in_a_rolled_back_savepoint_leaves_no_file_while_the_outer_transaction_commits(user, collection):
    with transaction.atomic():
        kept = services.document_create(owner=user, collection=collection, enqueue=False,
                                      file=ContentFile(b"kept", name="kept.txt"))
        with pytest.raises(ZeroDivisionError), transaction.atomic():
            services.document_create(owner=user, collection=collection, enqueue=False,
                                   file=ContentFile(b"dropped", name="dropped.txt"))
            1 / 0  # noqa: B018
    assert list(Document.objects.values_list("pk", flat=True)) == [kept.pk]
    assert stored_files() == [Path(kept.file.path)]


@pytest.mark.django_db
def test_the_same_file_in_two_collections_is_stored_for_each(user, collection):
    other = Collection.objects.create(name="Other", owner=user)
    first = services.document_create(owner=user, collection=collection, enqueue=False,
                                   file=ContentFile(b"same", name="a.txt"))
    second = services.document_create(owner=user, collection=other, enqueue=False,
                                    file=ContentFile(b"same", name="a.txt"))
    assert first.file.name != second.file.name
    assert Path(first.file.path).read_bytes() == Path(second.file.path).read_bytes() == b"same"
