"""Both APIs fuzzed from their own OpenAPI schemas (schemathesis): no input makes them answer 500.

Generated requests reach the real Django app over WSGI with a valid bearer token; the
documents they touch are real rows in the test database.
"""

import pytest
import schemathesis
from django.core.files.base import ContentFile
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings

from documents import ingest
from documents.models import ApiToken, Collection

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
    document = ingest.document_create(
        owner=user, collection=collection, enqueue=False,
        file=ContentFile(b"Lighthouses guide ships past rocks at night.", name="lights.txt"),
    )
    ingest.document_ingest(document_id=document.pk)
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
