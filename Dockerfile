FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY infra infra
COPY mailservice mailservice
COPY emails emails
COPY providers providers
COPY dashboard dashboard
RUN pip install --no-cache-dir .
COPY manage.py gunicorn.conf.py ./
COPY templates templates
# collectstatic signs nothing, but the settings refuse to load without a key: this one lives for this step only.
# Its metrics files go to a directory of their own, not into the image's var/prometheus.
RUN SECRET_KEY=collectstatic-only PROMETHEUS_MULTIPROC_DIR=/tmp/build-metrics \
    python manage.py collectstatic --no-input --verbosity 0 && rm -rf /tmp/build-metrics
# The processes' user, with fixed ids: docker-compose.yml mounts its metrics tmpfs owned by uid 1000.
# Every directory that gets a volume (docker-compose.yml) exists here owned by that user: Docker gives a new
# named volume the owner of the directory it is mounted on, and a missing one would be root's.
RUN groupadd --gid 1000 mailservice \
    && useradd --uid 1000 --gid mailservice --create-home mailservice \
    && mkdir -p var/outbox var/prometheus \
    && chown mailservice:mailservice var var/outbox var/prometheus
USER mailservice
EXPOSE 8000
CMD ["gunicorn", "mailservice.wsgi", "--bind", "0.0.0.0:8000"]
