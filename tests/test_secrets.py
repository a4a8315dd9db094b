"""Where SECRET_KEY comes from: the environment, else the key `make run` made once in var/, never a default with
DEBUG off (the attack: a deployment left on a published key, whose sessions anyone can forge)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import urllib.request

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from mailservice.settings import secret_key
from tests.processes import Process, fresh_clone, wait_for
from tests.sink import free_port
from tests.test_deploy_check import production_env


@pytest.fixture
def without_secret_key(monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("SECRET_KEY_FILE", raising=False)


def test_with_debug_off_and_no_key_anywhere_it_refuses_naming_secret_key(without_secret_key, tmp_path):
    with pytest.raises(ImproperlyConfigured, match=r"^SECRET_KEY is not set\. .*SECRET_KEY_FILE"):
        secret_key(tmp_path / "var" / "secret_key", debug=False)


def test_the_environment_wins_over_the_file_make_run_made(without_secret_key, tmp_path, monkeypatch):
    made = tmp_path / "secret_key"
    made.write_text("made-by-make-run\n")
    assert secret_key(made, debug=False) == "made-by-make-run"
    monkeypatch.setenv("SECRET_KEY", "from-the-environment")
    assert secret_key(made, debug=False) == "from-the-environment"


def test_secret_key_file_is_read_and_wins_over_the_file_make_run_made(without_secret_key, tmp_path, monkeypatch):
    (tmp_path / "docker-secret").write_text("from-a-docker-secret\n")
    (tmp_path / "secret_key").write_text("made-by-make-run\n")
    monkeypatch.setenv("SECRET_KEY_FILE", str(tmp_path / "docker-secret"))
    assert secret_key(tmp_path / "secret_key", debug=False) == "from-a-docker-secret"


def test_an_empty_key_is_no_key(without_secret_key, tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "")
    (tmp_path / "secret_key").write_text("\n")
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY is not set"):
        secret_key(tmp_path / "secret_key", debug=False)


def test_debug_has_a_development_key(without_secret_key, tmp_path):
    assert secret_key(tmp_path / "secret_key", debug=True) == "dev-only-insecure-secret-key"


def _serves(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def make_run_until_every_process_starts(clone, env: dict[str, str], port: int, log_dir, *, name: str) -> str:
    """Runs `make run` in `clone` until the web answers and the worker and beat have started; stops it all and
    returns its output."""
    process = Process(name, ["make", "-C", str(clone), "run"], env, log_dir)
    try:
        wait_for(lambda: _serves(f"http://127.0.0.1:{port}") or process.exited(), timeout=120, what="make run")
        assert not process.exited(), process.log()
        wait_for(lambda: "beat: Starting" in process.log() and " ready." in process.log(), timeout=60,
                 what="the worker and beat to start")  # fmt: skip
    finally:
        process.stop()
    return process.log_path.read_text()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_make_run_on_a_fresh_clone_makes_a_key_once_and_every_process_starts_with_it(tmp_path):
    """A fresh clone has no key and no SECRET_KEY in its environment: `make run` makes one (mode 600), the web,
    worker and beat it starts all load the settings with it, and a second `make run` keeps the same key."""
    clone = fresh_clone(tmp_path / "clone")
    db = connection.settings_dict
    port = free_port()
    env = production_env(
        clone,
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        BIND=f"127.0.0.1:{port}",
    )
    env.pop("STATIC_ROOT", None)
    env.pop("DEBUG")  # as a fresh machine: DEBUG unset, so off
    made = clone / "var" / "secret_key"

    keys = []
    for run in range(2):
        log = make_run_until_every_process_starts(clone, env, port, tmp_path, name=f"make-run-{run}")
        assert "ImproperlyConfigured" not in log
        assert ("made a SECRET_KEY in var/secret_key" in log) == (run == 0)
        keys.append(made.read_text().strip())

    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert len(keys[0]) >= 50
    assert keys[1] == keys[0]
    # The settings of that clone read it (the environment giving none).
    shown = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.SECRET_KEY)"],
        cwd=clone, env={**env, "PYTHONPATH": str(clone)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.stdout.strip() == keys[0], shown.stderr
    assert os.environ.get("SECRET_KEY") != keys[0]
