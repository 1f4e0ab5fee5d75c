"""ragsite/settings.py: production by default, a secret key from SECRET_KEY, SECRET_KEY_FILE or make run's
var/secret_key, booleans and numbers parsed strictly (a typo fails loudly instead of turning security off), and
no side effect when imported (no database server starts).

The settings are imported in a fresh process each time, as `make run`, manage.py and the worker import them.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from ragsite.settings import env_bool, env_float, env_int

ROOT = Path(__file__).resolve().parents[2]
SHOW = ("import django; django.setup(); from django.conf import settings as s; "
        "print(s.DEBUG, s.SECRET_KEY, s.SESSION_COOKIE_SECURE)")


def settings_of(tmp_path, **env):
    """(return code, output) of importing the settings with only ``env`` set, on an empty var/ folder."""
    base = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY", "SECRET_KEY_FILE")}
    base.update(RAG_VAR_DIR=str(tmp_path / "var"), DATABASE_URL="postgresql://app:pw@127.0.0.1:1/never-used")
    result = subprocess.run([sys.executable, "-c", SHOW], cwd=ROOT, env={**base, **env}, capture_output=True,
                            text=True)
    return result.returncode, result.stdout.strip() + result.stderr


@pytest.mark.parametrize("spelling, value", [("true", True), ("On", True), ("1", True), ("YES", True),
                                             ("false", False), ("off", False), ("0", False), (" no ", False)])
def test_env_bool_accepts_the_usual_spellings(monkeypatch, spelling, value):
    monkeypatch.setenv("SOME_FLAG", spelling)
    assert env_bool("SOME_FLAG", not value) is value


@pytest.mark.parametrize("typo", ["ture", "flase", "2", "enabled"])
def test_env_bool_refuses_anything_else(monkeypatch, typo):
    monkeypatch.setenv("SOME_FLAG", typo)
    with pytest.raises(ImproperlyConfigured, match="SOME_FLAG must be one of 1, true, yes, on, 0, false"):
        env_bool("SOME_FLAG", True)


def test_a_misspelt_security_setting_stops_the_start(tmp_path):
    code, output = settings_of(tmp_path, SECRET_KEY="k" * 50, SESSION_COOKIE_SECURE="ture")
    assert code != 0 and "SESSION_COOKIE_SECURE must be one of" in output and "'ture'" in output


def test_debug_is_off_by_default_and_a_secret_key_is_required(tmp_path):
    code, output = settings_of(tmp_path)
    assert code != 0 and "SECRET_KEY must be set when DEBUG is false" in output
    assert settings_of(tmp_path, SECRET_KEY="from-the-environment") == (0, "False from-the-environment True")


def test_the_secret_key_comes_from_secret_key_file_then_make_runs_var_file(tmp_path):
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "secret_key").write_text("made-by-make-run\n")
    assert settings_of(tmp_path) == (0, "False made-by-make-run True")
    (tmp_path / "docker-secret").write_text("from-a-docker-secret\n")
    assert settings_of(tmp_path, SECRET_KEY_FILE=str(tmp_path / "docker-secret"))[1].startswith(
        "False from-a-docker-secret")
    assert settings_of(tmp_path, SECRET_KEY="wins", SECRET_KEY_FILE=str(tmp_path / "docker-secret"))[1].startswith(
        "False wins")
    code, output = settings_of(tmp_path, SECRET_KEY_FILE=str(tmp_path / "missing"))
    assert code != 0 and "SECRET_KEY_FILE names" in output and "cannot be read" in output


def test_development_still_runs_without_any_key(tmp_path):
    code, output = settings_of(tmp_path, DEBUG="true")
    assert code == 0 and output.startswith("True django-insecure-")


@pytest.mark.parametrize("typo", ["50MB", "1.5", "", "٣", "fifty"])
def test_env_int_refuses_anything_but_a_whole_number(monkeypatch, typo):
    monkeypatch.setenv("SOME_NUMBER", typo)
    if not typo:
        assert env_int("SOME_NUMBER", 7) == 7  # unset or empty: the default
        return
    with pytest.raises(ImproperlyConfigured, match=r"SOME_NUMBER must be a whole number \(like 7\), not "):
        env_int("SOME_NUMBER", 7)


def test_env_float_takes_decimals_and_refuses_units(monkeypatch):
    monkeypatch.setenv("SOME_SECONDS", " 2.5 ")
    assert env_float("SOME_SECONDS", 60) == 2.5
    monkeypatch.setenv("SOME_SECONDS", "60s")
    with pytest.raises(ImproperlyConfigured, match=r"SOME_SECONDS must be a number \(like 60\), not '60s'"):
        env_float("SOME_SECONDS", 60)


def test_a_misspelt_number_stops_the_start(tmp_path):
    code, output = settings_of(tmp_path, DEBUG="true", MAX_UPLOAD_MB="50MB")
    assert code != 0 and "MAX_UPLOAD_MB must be a whole number" in output and "'50MB'" in output


def test_importing_the_settings_starts_no_database(tmp_path):
    """Without DATABASE_URL the embedded PostgreSQL starts with the first connection, not with the settings:
    setting Django up and running a command that needs no database leave no server and no data folder."""
    import psutil

    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(DEBUG="true", RAG_VAR_DIR=str(tmp_path / "var"))
    show = subprocess.run([sys.executable, "-c", SHOW], cwd=ROOT, env=env, capture_output=True, text=True)
    check = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert show.returncode == 0 and check.returncode == 0, show.stderr + check.stderr
    assert not (tmp_path / "var" / "pgdata").exists()
    servers = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(
        p.info["cmdline"] or [])]
    assert servers == []
