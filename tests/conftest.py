from __future__ import annotations

import json
import os
import sys

import pytest
from django.conf import settings
from django.db import connection
from django.db.models.functions import Now
from rest_framework.test import APIClient

from emails.models import Email
from emails.services import api_key_create, email_create
from infra.redis import get_redis
from tests.processes import ROOT, PostgresServer, Process, start_beat, start_web, start_worker, wait_for
from tests.sink import SmtpSink
from tests.webhook_receiver import WebhookReceiver


def email_payload(**overrides) -> dict:
    payload = {
        "from": "Shop <shop@example.com>",
        "to": ["alice@example.org"],
        "subject": "Your order",
        "text": "Thank you for your order.",
    }
    payload.update(overrides)
    return payload


def make_emails(count: int, **overrides) -> list[str]:
    """Accepted emails, as the API would store them (without an HTTP round trip each)."""
    payload = email_payload(**overrides)
    fields = {"from_email": payload.pop("from"), **payload}
    return [str(email_create(api_key=None, **fields).id) for _ in range(count)]


def make_due(email_id: str) -> None:
    """Moves a PENDING email's next attempt to now, by PostgreSQL's clock (the one claims compare with),
    where a test would otherwise wait out a retry's backoff."""
    Email.objects.filter(id=email_id).update(next_attempt_at=Now())


def _api_client(name: str) -> APIClient:
    api_key, key = api_key_create(name=name)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    client.api_key = api_key
    return client


@pytest.fixture
def alice(db) -> APIClient:
    return _api_client("alice")


@pytest.fixture
def bob(db) -> APIClient:
    return _api_client("bob")


@pytest.fixture
def sink():
    server = SmtpSink().start()
    yield server
    server.stop()


@pytest.fixture
def sending_to_sink(settings, sink) -> SmtpSink:
    """Emails sent in this process go to the sink."""
    settings.MAIL_PROVIDERS = [sink.provider()]
    return sink


@pytest.fixture
def receiver(settings):
    """A webhook receiver on loopback, which delivery may call (MAIL_WEBHOOK_ALLOW_PRIVATE, as in development)."""
    settings.MAIL_WEBHOOK_ALLOW_PRIVATE = True
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def empty_test_redis():
    """Each test starts with no queued tasks, rate limits or circuit breakers left by another."""
    get_redis().flushdb()
    yield


class Services:
    """Starts real processes (worker, beat, gunicorn) against the test database; stops them all at the end.

    They get this process's MAIL_PROVIDERS as it is when they start, and `env` on top."""

    def __init__(self, env: dict[str, str], log_dir) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: list[Process] = []

    def _env(self, overrides: dict[str, str]) -> dict[str, str]:
        return {**self.env, "MAIL_PROVIDERS": json.dumps(settings.MAIL_PROVIDERS), **overrides}

    def worker(self, *, concurrency: int = 2, queues: str = "celery", clock_skew: float = 0, **env: str) -> Process:
        return self._track(
            start_worker(self._env(env), self.log_dir, concurrency=concurrency, queues=queues, clock_skew=clock_skew)
        )

    def beat(self, **env: str) -> Process:
        return self._track(start_beat(self._env(env), self.log_dir))

    def web(self, **env: str) -> str:
        process, url = start_web(self._env(env), self.log_dir)
        self._track(process)
        return url

    def stream(self, **env: str) -> Process:
        """A `manage.py consume_stream` process, once it is reading."""
        process = self._track(
            Process("stream", [sys.executable, "manage.py", "consume_stream"], self._env(env), self.log_dir)
        )

        def reading() -> bool:
            assert not process.exited(), process.log()
            return "Consuming" in process.log()

        wait_for(reading, timeout=30, what="consume_stream to start")
        return process

    def _track(self, process: Process) -> Process:
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()


@pytest.fixture
def services(transactional_db, tmp_path):
    """Processes see only committed rows: tests using them run with transaction=True (this fixture's db)."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "mailservice.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(ROOT),  # test providers (tests/crashing_provider.py) are importable in workers
    }
    running = Services(env, tmp_path)
    yield running
    running.stop_all()


@pytest.fixture
def own_postgres(tmp_path):
    """A PostgreSQL server of the test's own, migrated, at `own_postgres.url`: the test may stop or freeze it."""
    with PostgresServer(tmp_path) as server:
        server.create_database()
        yield server
