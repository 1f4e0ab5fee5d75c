"""Health that tells the truth: /healthz (liveness) and /readyz (readiness), and what is really in use.

A product with no worker answering, or whose embeddings fell back to hashing, is "degraded": /healthz still
answers 200 (the process serves search and chat), /readyz answers 503. The documents page tells
administrators (and only them) when the embeddings are the hashing fallback.
"""

import pytest
from django.urls import reverse

from chat import llm

pytestmark = pytest.mark.django_db


def both(client):
    live, ready = client.get("/healthz"), client.get("/readyz")
    assert live.json()["status"] == ready.json()["status"]
    return live.status_code, ready.status_code, ready.json()


def test_no_worker_answering_is_degraded_live_but_not_ready(client):
    live, ready, body = both(client)
    assert (live, ready) == (200, 503), body
    assert body["status"] == "degraded" and body["workers"] == 0
    assert any("no worker answers" in problem for problem in body["problems"])


def test_a_worker_consuming_only_another_queue_is_not_counted(celery_worker, celery_app, client):
    # The worker answers pings, but it consumes this run's queue, not the one the app now sends to: a worker of
    # another installation (or test run) on the same broker must not make this one look served.
    assert both(client)[2]["workers"] >= 1
    ours, celery_app.conf.task_default_queue = celery_app.conf.task_default_queue, "a-queue-no-worker-consumes"
    try:
        live, ready, body = both(client)
    finally:
        celery_app.conf.task_default_queue = ours
    assert (live, ready) == (200, 503), body
    assert body["workers"] == 0 and any("no worker answers" in problem for problem in body["problems"])


def test_everything_working_is_ok_and_ready_and_names_what_is_in_use(celery_worker, client, settings):
    settings.LLM_BACKEND = "extractive"
    live, ready, body = both(client)
    assert (live, ready) == (200, 200), body
    assert body["status"] == "ok" and body["workers"] >= 1 and body["problems"] == []
    # Hashing chosen explicitly (as here, for the tests) is no fallback.
    assert body["embeddings"] == {"backend": "hashing", "model": f"hashing-{settings.EMBEDDING_DIMENSIONS}",
                                  "dimensions": settings.EMBEDDING_DIMENSIONS, "fallback": False, "error": None}
    assert body["language_model"] == "none: extractive answers"


def test_the_hashing_fallback_is_degraded_and_not_ready(celery_worker, client, settings, tmp_path):
    settings.EMBEDDING_BACKEND = "auto"  # a real model was asked for ...
    settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = ""
    settings.EMBEDDING_MODEL_PATH = str(tmp_path / "no-model-here")  # ... and none can load
    live, ready, body = both(client)
    assert (live, ready) == (200, 503), body
    assert body["status"] == "degraded" and body["workers"] >= 1
    assert body["embeddings"]["backend"] == "hashing" and body["embeddings"]["fallback"] is True
    assert any("hashing fallback" in problem for problem in body["problems"])


def test_an_embedding_model_that_cannot_load_is_degraded_and_says_why(client, settings, tmp_path):
    settings.EMBEDDING_BACKEND = "fastembed"
    settings.EMBEDDING_MODEL_PATH = str(tmp_path / "missing-model")
    live, ready, body = both(client)
    assert (live, ready) == (200, 503), body
    assert body["embeddings"]["error"] and "missing-model" in body["embeddings"]["error"]
    assert any("embedding model cannot be loaded" in problem for problem in body["problems"])


def test_the_configured_language_model_and_embedding_service_are_named(client, settings, openai_server):
    settings.LLM_BACKEND = settings.EMBEDDING_BACKEND = "auto"
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = openai_server.url, "test-key"
    settings.LLM_MODEL, settings.EMBEDDING_MODEL = "gpt-test", "text-embedding-3-small"
    body = client.get("/healthz").json()
    assert body["language_model"] == "gpt-test"
    assert body["embeddings"]["backend"] == "openai" and body["embeddings"]["model"] == "text-embedding-3-small"
    assert openai_server.requests == []  # reporting never calls the provider


def fallback(settings, tmp_path):
    settings.EMBEDDING_BACKEND = "auto"
    settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = ""
    settings.EMBEDDING_MODEL_PATH = str(tmp_path / "no-model-here")


def test_administrators_see_a_banner_when_the_embeddings_are_the_hashing_fallback(client, django_user_model,
                                                                                  settings, tmp_path):
    admin = django_user_model.objects.create_user("operator", password="pw", is_staff=True)
    client.force_login(admin)
    assert b'id="embedding-warning"' not in client.get(reverse("documents:list")).content  # hashing chosen
    fallback(settings, tmp_path)
    page = client.get(reverse("documents:list")).content.decode()
    assert 'id="embedding-warning"' in page and "hashing fallback" in page and "EMBEDDING_MODEL_PATH" in page


def test_ordinary_users_never_see_configuration_advice(client, user, settings, tmp_path):
    fallback(settings, tmp_path)
    client.force_login(user)
    page = client.get(reverse("documents:list")).content.decode()
    assert 'id="embedding-warning"' not in page and "EMBEDDING_MODEL_PATH" not in page
    # The extractive answer stays labelled as such, without telling users how to configure a model.
    assert "No language model is configured" in llm.NO_LLM_NOTE
    assert "OPENAI_API_KEY" not in llm.NO_LLM_NOTE and "OPENAI_BASE_URL" not in llm.NO_LLM_NOTE
