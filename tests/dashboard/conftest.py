from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import connections

from tests.processes import ROOT

CHROMIUM = "/usr/bin/chromium"
# Without these, Chromium keeps calling home (updates, sync, field trials) on a closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # fmt: skip
# Screenshots a person can look at after the run (var/ is not in git).
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", ROOT / "var" / "test-artifacts"))


@pytest.fixture
def operator(client):
    """A logged-in staff user (Django's test client)."""
    client.force_login(User.objects.create_user("operator", password="pw", is_staff=True))
    return client


@pytest.fixture(scope="session")
def static_root(tmp_path_factory) -> Path:
    """Static files collected as in production (hashed names, compressed), for gunicorn's whitenoise."""
    root = tmp_path_factory.mktemp("static")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mailservice.settings", "STATIC_ROOT": str(root)}
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--no-input", "--verbosity", "0"],
        cwd=ROOT, env=env, check=True, timeout=300,
    )  # fmt: skip
    return root


@pytest.fixture
def browser(monkeypatch) -> Iterator:
    """Debian's headless Chromium, driven by Playwright (which downloads no browser of its own)."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio loop on this thread, which Django takes for an async
    # context; the test still calls the ORM synchronously, one thing at a time.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()
        # In that context Django opened connections of its own: close them, or the test database
        # cannot be dropped at the end of the run.
        connections.close_all()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
