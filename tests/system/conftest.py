"""The tests that start a whole site (`make run`: its own PostgreSQL, Redis, worker and web server) run one
after another on one xdist worker: two at once on two cores would only make each wait for the other."""

import pytest

WHOLE_SITE = {"test_launcher.py", "test_faults.py", "test_offline_first_run.py", "test_space_backfill_killed.py"}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in WHOLE_SITE:
            item.add_marker(pytest.mark.xdist_group("whole-site"))
