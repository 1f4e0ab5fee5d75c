"""ragsite/urls.py: what a browser asks for by itself."""

import pytest
from django.contrib.staticfiles import finders


@pytest.mark.django_db
def test_the_icon_is_linked_from_every_page_and_favicon_ico_leads_to_it(client, user):
    """Without it every page, the admin's too, logged a 404 for /favicon.ico."""
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"] == "/static/favicon.svg"
    assert finders.find("favicon.svg")
    client.force_login(user)
    assert '<link rel="icon" href="/static/favicon.svg"' in client.get("/documents/").content.decode()


@pytest.mark.django_db
def test_the_admin_says_api_tokens(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert "API tokens" in page and "Api tokens" not in page
