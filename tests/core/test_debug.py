"""What Django's DEBUG pages may show (core/debug.py): no password of any URL on the 500 page, no list of
URL patterns on a 404 for anyone but staff."""

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.urls import include, path

from core.debug import UrlPasswordReporterFilter

pytestmark = pytest.mark.django_db


def boom(request):
    raise RuntimeError("something broke")


urlpatterns = [path("boom/", boom), path("", include("ragsite.urls"))]


@pytest.fixture
def debug(settings):
    settings.DEBUG = True
    return settings


@pytest.mark.urls(__name__)
def test_the_debug_500_page_shows_no_password_of_any_url(debug):
    debug.REDIS_URL = "redis://:redis-hunter2@cache.internal:6379/0"
    debug.CELERY_BROKER_URL = "redis://worker:broker-hunter2@cache.internal:6379/1"
    debug.CACHES = {"default": {**debug.CACHES["default"], "LOCATION": "redis://:cache-hunter2@127.0.0.1:6379/0"}}
    response = Client(raise_request_exception=False).get("/boom/")
    assert response.status_code == 500
    page = response.content.decode()
    assert "something broke" in page and "cache.internal" in page  # the technical page, with the settings
    assert "hunter2" not in page
    assert "redis://:********************@cache.internal:6379/0" in page
    # The database's URL is not a setting at all (its password is in DATABASES, which Django masks).
    assert not hasattr(django_settings, "DATABASE_URL")


def test_the_filter_masks_url_passwords_anywhere_in_a_setting():
    cleanse = UrlPasswordReporterFilter().cleanse_setting
    assert cleanse("REPLICAS", ["postgresql://app:s3cret@db-2/rag", "postgresql://db-3/rag"]) == [
        "postgresql://app:********************@db-2/rag", "postgresql://db-3/rag"]
    assert cleanse("SECRET_THING", "x") == "********************"  # Django's own rule still applies


def test_an_anonymous_404_under_debug_is_the_ordinary_page(client, debug):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "This page does not exist" in page
    assert "URLconf" not in page and "api/v1/" not in page and "admin/" not in page


def test_a_404_raised_by_a_view_under_debug_is_the_ordinary_page_for_a_signed_in_user(client, debug, user):
    client.force_login(user)
    response = client.get("/documents/987654321/")
    assert response.status_code == 404
    assert "This page does not exist" in response.content.decode()
    assert "Raised by" not in response.content.decode()


def test_staff_still_see_the_debug_404_and_missing_slashes_still_redirect(client, debug, django_user_model):
    assert client.get("/documents").status_code == 301  # CommonMiddleware's APPEND_SLASH still works
    client.force_login(django_user_model.objects.create_user("root", is_staff=True))
    response = client.get("/no-such-page/")
    assert response.status_code == 404 and "URLconf" in response.content.decode()
