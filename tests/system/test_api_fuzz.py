"""Both APIs fuzzed from their own OpenAPI schemas (schemathesis): no input makes them answer 500.

Generated requests reach the real Django app over WSGI with a valid bearer token; the
documents they touch are real rows in the test database.
"""

import json

import pytest
import schemathesis
from django.core.files.base import ContentFile
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.models import ApiToken
from documents import pipeline, services
from documents.models import Collection, Document

app = get_wsgi_application()
documents_api = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
openai_api = schemathesis.openapi.from_wsgi("/v1/openapi.json", app)
FUZZ = settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(autouse=True)
def keep_the_test_transaction():
    """Django closes a connection in a transaction at the end of a request; Django's test client
    prevents that, and so must requests sent to the WSGI app directly."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def token(db, user, settings):
    settings.LLM_BACKEND = "extractive"
    collection = Collection.objects.create(name="Fuzzed", owner=user)
    document = services.document_create(
        owner=user, collection=collection, enqueue=False,
        file=ContentFile(b"Lighthouses guide ships past rocks at night.", name="lights.txt"),
    )
    pipeline.document_ingest(document_id=document.pk)
    return ApiToken.issue(user=user)[1]


def check(case, token):
    response = case.call(headers={"Authorization": f"Bearer {token}"})
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text[:500])


@documents_api.parametrize()
@FUZZ
def test_documents_api_never_answers_500(case, token):
    check(case, token)


@openai_api.parametrize()
@FUZZ
def test_openai_compatible_api_never_answers_500(case, token):
    check(case, token)


# Odd values where the schemas say only "string" or "list": ids spelled in any digits (``"²".isdigit()`` is
# true, ``int("²")`` raises), lone surrogates (``"\ud800"`` in JSON cannot be encoded to UTF-8) and content
# parts of any JSON.
DIGITS = list("0123456789²³¹①٣３٠۵߁१ -+.\x00")  # ASCII, superscript, circled, Arabic-Indic, fullwidth, ...
ODD_ID = st.text(st.sampled_from(DIGITS) | st.characters(categories=["Nd", "No", "Nl"]), max_size=25)
TEXT = st.text(st.characters(codec=None) | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=20)
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["type", "text"]) | TEXT, inner,
                                                                max_size=3),
    max_leaves=8,
)
PART = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]) | TEXT}, optional={"text": ANY_JSON})
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]),
                                 "content": TEXT | st.lists(PART | ANY_JSON, max_size=3) | ANY_JSON})
BODY = st.fixed_dictionaries({
    "model": st.sampled_from(["rag"] * 3 + ["rag-collection-"]).flatmap(
        lambda model: st.just(model) if model == "rag" else ODD_ID.map(model.__add__)),
    "messages": st.lists(MESSAGE, min_size=1, max_size=3),
    "stream": st.booleans(),
})


def _body_of(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.mark.django_db
@given(body=BODY)
@example(body={"model": "rag", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]})
@example(body={"model": "rag", "messages": [{"role": "user", "content": "vacation \ud800"}], "stream": True})
@example(body={"model": "rag-collection-²", "messages": [{"role": "user", "content": "vacation"}]})
@FUZZ
def test_chat_completions_never_answer_500_to_odd_messages_or_models(body, client, token):
    response = client.post("/v1/chat/completions", json.dumps(body), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {token}")
    content = _body_of(response)
    assert response.status_code < 500, content[:500]
    assert b'"server_error"' not in content and b'"api_error"' not in content, content[:500]


@pytest.mark.django_db
@given(odd=ODD_ID)
@example(odd="²")
@example(odd="1\x00")
@FUZZ
def test_ids_in_queries_and_forms_never_answer_500(odd, client, user, token):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    client.force_login(user)
    document = Document.objects.get()
    responses = [
        client.get("/api/v1/search", {"q": "lighthouses", "collection": odd}, **auth),
        client.get("/documents/status.json", {"id": odd}),
        client.get(f"/documents/{document.pk}/", {"chunk": odd}),
        client.get(f"/documents/{document.pk}/", {"page": odd}),
        client.get("/documents/", {"q": odd, "collection": odd, "page": odd, "sort": odd, "status": odd, "type": odd}),
        client.post("/documents/bulk/", {"action": "delete", "ids": odd, "page": odd}),
        client.post("/chat/new/", {"collection": odd}),
    ]
    assert [r.status_code for r in responses if r.status_code >= 500] == []
