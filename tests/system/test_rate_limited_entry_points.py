"""Rate limits at every entry point: asking (chat page, /v1/chat/completions) and uploading (documents
page, per file; /api/v1/documents; admin add). Beyond the limit: 429, the limit in the message, Retry-After.

ragsite/ratelimit.py itself (windows, parsing) is tested in tests/core/test_ratelimit.py; the browser's
rendering of these answers in tests/e2e/test_rate_limit_messages.py.
"""

from __future__ import annotations

import re

import openai
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from chat.models import Conversation, Message
from core.models import ApiToken
from documents.models import Document
from tests.conftest import start_of_a_rate_window

pytestmark = pytest.mark.django_db

QUESTIONS = re.compile(r"^Too many questions: the limit is 2 per minute\. Try again in \d+ seconds\.$")
UPLOADS = re.compile(r"^Too many uploads: the limit is 2 per minute\. Try again in \d+ seconds\.$")


@pytest.fixture(autouse=True)
def limits(settings):
    """Two questions and two files a minute (tests/conftest.py turns the limits off for other tests)."""
    settings.RATE_LIMITS = {"chat": "2/m", "upload": "2/m"}
    settings.LLM_BACKEND = "extractive"  # answers without a model: the limit is what is tested
    start_of_a_rate_window()  # the limit spent and then refused within one window


def retry_after(response) -> int:
    seconds = int(response["Retry-After"])
    assert 1 <= seconds <= 60
    return seconds


def text_file(name: str, body: bytes | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, body or f"The contents of {name}.".encode(), content_type="text/plain")


# ---- asking: the chat page --------------------------------------------------------------------------------------
def ask(client, conversation, question="Which trips go by train?"):
    response = client.post(reverse("chat:ask", args=[conversation.pk]), {"question": question})
    if response.streaming:
        b"".join(response.streaming_content)  # the answer runs (and is saved) as it streams
    return response


def test_the_chat_page_answers_429_with_the_limit_and_does_not_save_the_question(client, user, other_user):
    client.force_login(user)
    conversation = Conversation.objects.create(owner=user)
    assert [ask(client, conversation).status_code for _ in range(2)] == [200, 200]

    refused = ask(client, conversation, "A third question, too soon")
    assert refused.status_code == 429
    assert refused["Content-Type"].startswith("text/plain")  # the page's script shows it in the answer's bubble
    assert QUESTIONS.match(refused.content.decode())
    assert int(refused.content.decode().split("Try again in ")[1].split()[0]) == retry_after(refused)
    assert not Message.objects.filter(content="A third question, too soon").exists()

    client.force_login(other_user)  # counted per user
    assert ask(client, Conversation.objects.create(owner=other_user)).status_code == 200


def test_refused_questions_do_not_count(client, user):
    client.force_login(user)
    conversation = Conversation.objects.create(owner=user)
    for _ in range(3):
        assert ask(client, conversation, "   ").status_code == 400  # empty: refused before counting
    assert [ask(client, conversation).status_code for _ in range(3)] == [200, 200, 429]


# ---- asking: the OpenAI-compatible API --------------------------------------------------------------------------
def completions(client, raw_token, question="Which trips go by train?"):
    return client.post(
        "/v1/chat/completions", {"model": "rag", "messages": [{"role": "user", "content": question}]},
        content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw_token}",
    )


def test_chat_completions_answers_429_in_openais_error_shape(client, user):
    _, raw = ApiToken.issue(user=user)
    assert [completions(client, raw).status_code for _ in range(2)] == [200, 200]
    refused = completions(client, raw)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert QUESTIONS.match(error["message"])
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
    retry_after(refused)


def test_the_chat_page_and_the_api_share_the_users_question_budget(client, user):
    client.force_login(user)
    _, raw = ApiToken.issue(user=user)
    assert ask(client, Conversation.objects.create(owner=user)).status_code == 200
    assert completions(client, raw).status_code == 200
    assert completions(client, raw).status_code == 429


def test_the_official_openai_client_raises_its_rate_limit_error_with_the_message(live_server, user):
    _, raw = ApiToken.issue(user=user)
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key=raw, max_retries=0)
    try:
        for _ in range(2):
            client.chat.completions.create(model="rag", messages=[{"role": "user", "content": "Trains?"}])
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="rag", messages=[{"role": "user", "content": "Trains?"}])
    finally:
        client.close()
    assert refused.value.status_code == 429
    assert QUESTIONS.match(refused.value.body["message"])
    retry_after(refused.value.response.headers)


# ---- uploading: the documents page (per file) -------------------------------------------------------------------
def upload_page(client, *files, json=True):
    headers = {"HTTP_ACCEPT": "application/json"} if json else {}
    return client.post(reverse("documents:list"), {"files": list(files), "collection": "Limits"}, **headers)


def test_the_documents_page_counts_each_file_and_refuses_the_ones_past_the_limit(client, user):
    client.force_login(user)
    response = upload_page(client, text_file("a.txt"), text_file("b.txt"), text_file("c.txt"))
    assert response.status_code == 202  # two were accepted
    results = response.json()["results"]
    assert [r["ok"] for r in results] == [True, True, False]
    assert results[2]["name"] == "c.txt" and UPLOADS.match(results[2]["detail"])
    retry_after(response)
    assert sorted(Document.objects.values_list("original_filename", flat=True)) == ["a.txt", "b.txt"]

    refused = upload_page(client, text_file("d.txt"))
    assert refused.status_code == 429  # nothing accepted
    assert UPLOADS.match(refused.json()["results"][0]["detail"])
    retry_after(refused)
    assert Document.objects.count() == 2


def test_without_javascript_the_documents_page_shows_the_limit_per_file(client, user):
    client.force_login(user)
    response = upload_page(client, text_file("a.txt"), text_file("b.txt"), text_file("c.txt"), json=False)
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "a.txt: queued for processing." in page
    assert re.search(r"c\.txt: Too many uploads: the limit is 2 per minute\. Try again in \d+ seconds\.", page)


# ---- uploading: the API -----------------------------------------------------------------------------------------
def test_the_upload_api_answers_429_with_its_detail_and_retry_after(client, user):
    _, raw = ApiToken.issue(user=user)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    statuses = [client.post("/api/v1/documents", {"file": text_file(f"{n}.txt")}, **auth).status_code
                for n in range(2)]
    assert statuses == [202, 202]
    refused = client.post("/api/v1/documents", {"file": text_file("2.txt")}, **auth)
    assert refused.status_code == 429
    assert UPLOADS.match(refused.json()["detail"])
    retry_after(refused)
    assert Document.objects.count() == 2
    schema = client.get("/api/v1/openapi.json").json()
    assert "429" in schema["paths"]["/api/v1/documents"]["post"]["responses"]


def test_requests_refused_before_storing_do_not_count(client, user, settings):
    _, raw = ApiToken.issue(user=user)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    settings.MAX_UPLOAD_BYTES = 1024
    for _ in range(3):
        assert client.post("/api/v1/documents", {"file": text_file("big.txt", b"x" * 4096)}, **auth).status_code == 413
        assert client.post("/api/v1/documents", {"collection": "no file"}, **auth).status_code == 400
    assert client.post("/api/v1/documents", {"file": text_file("small.txt")}, **auth).status_code == 202


# ---- uploading: the admin ---------------------------------------------------------------------------------------
def test_the_admin_add_form_answers_429_with_the_limit(client, django_user_model, collection, settings):
    settings.RATE_LIMITS = {"chat": "", "upload": "1/m"}
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-for-tests-only")
    client.force_login(admin)

    def add(name):
        return client.post("/admin/documents/document/add/", {
            "collection": collection.pk, "file": text_file(name), "title": "", "metadata": "{}",
        })

    assert add("memo.txt").status_code == 302
    refused = add("second.txt")
    assert refused.status_code == 429
    retry_after(refused)
    assert re.search(r"Too many uploads: the limit is 1 per minute\. Try again in \d+ seconds\.",
                     refused.content.decode())
    assert list(Document.objects.values_list("original_filename", flat=True)) == ["memo.txt"]


def test_limits_are_off_when_empty(client, user, settings):
    settings.RATE_LIMITS = {"chat": "", "upload": ""}
    _, raw = ApiToken.issue(user=user)
    assert all(completions(client, raw).status_code == 200 for _ in range(5))
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    assert all(client.post("/api/v1/documents", {"file": text_file(f"{n}.txt")}, **auth).status_code == 202
               for n in range(5))
