"""The admin's database health page in the browser: reached from the admin's index, and no wider than a phone
(long statements and index names scroll inside their tables)."""

from __future__ import annotations

import pytest
from django.db import connection
from playwright.sync_api import expect

from tests.e2e.test_phone_layout import NARROWEST, PHONE, assert_fits

pytestmark = pytest.mark.django_db(transaction=True)


def test_staff_open_it_from_the_admin_index_and_it_fits_a_phone(page, sign_in, user, live_server, csp_violations):
    user.is_staff = user.is_superuser = True
    user.save()
    with connection.cursor() as cursor:  # a long statement and a long index name on the page
        cursor.execute(
            "CREATE TABLE e2e_probe (id serial PRIMARY KEY, " + ", ".join(f"c{i} int" for i in range(40)) + ")"
        )
        try:
            cursor.execute(
                "CREATE INDEX an_index_with_a_name_much_longer_than_a_phone_screen_is_wide ON e2e_probe (c1)"
            )
            cursor.execute("SELECT " + " + ".join(f"c{i}" for i in range(40)) + " AS a_long_statement FROM e2e_probe")
            sign_in(user)
            page.goto(live_server.url + "/admin/")
            page.get_by_role("link", name="Database health").click()
            expect(page.get_by_role("heading", name="Statements (pg_stat_statements)")).to_be_visible()
            expect(page.locator("#dbh-indexes")).to_contain_text("an_index_with_a_name_much_longer")
            for size in (PHONE, NARROWEST):
                page.set_viewport_size(size)
                page.reload()
                assert_fits(page)
            assert csp_violations == []  # its stylesheet is a file of ours, no inline style
        finally:
            cursor.execute("DROP TABLE e2e_probe")
