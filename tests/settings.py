"""Test settings: the real settings, with test defaults for what the environment does not say."""

import base64
import os

# A key for test processes only: the real settings refuse to start without one, and the gunicorn and celery
# processes the tests start inherit it from this environment.
os.environ.setdefault("SECRET_KEY", "test-only-" + "k" * 50)
# A Redis database of its own, so a test run never touches a running service's queue. Both named here, so that the
# servers `make run` may be running for this checkout (var/embedded.json) are never the tests'; `make test` names
# embedded ones of its own where the machine runs none.
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mailservice")
# Encrypted at rest, as `make run` stores by default: every path in and out runs through the sealed fields (tests of
# clear storage set MAIL_ENCRYPTION_KEYS themselves). A fixed key, for test data only.
os.environ.setdefault("MAIL_ENCRYPTION_KEYS", base64.urlsafe_b64encode(b"test-only-encryption-key-32bytes").decode())
# Tests that send name their provider (a real SMTP sink); the rest must never reach one.
os.environ.setdefault("MAIL_PROVIDERS", '[{"name": "memory", "backend": "locmem"}]')

import tempfile

# Metrics files of this run only (the worker processes the tests start inherit it).
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="mailservice-metrics-"))

from mailservice.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# No collectstatic before tests: serve static files from the apps, no manifest.
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
