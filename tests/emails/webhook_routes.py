"""The webhook routes as a configuration mounts them: mailservice.urls builds them when it is imported, so a
test that changes the configuration imports it again (and again after, for the tests that follow)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.test import override_settings
from django.urls import clear_url_caches


def _reload_urls() -> None:
    importlib.reload(importlib.import_module(settings.ROOT_URLCONF))
    clear_url_caches()


@contextmanager
def webhooks_configured(*, providers: list[dict], secret: str | None, **anymail: str) -> Iterator[None]:
    """MAIL_PROVIDERS = providers, MAIL_WEBHOOK_SECRET = secret (None: unset), ANYMAIL_<name> = anymail."""
    if secret:
        anymail["WEBHOOK_SECRET"] = secret
    try:
        with override_settings(MAIL_PROVIDERS=providers, ANYMAIL=anymail):
            _reload_urls()
            yield
    finally:
        _reload_urls()
