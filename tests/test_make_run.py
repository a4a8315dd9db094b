"""`make run` on a fresh laptop: no PostgreSQL or Redis (MAIL_EMBEDDED_SERVICES=1 makes this machine one), a fresh
clone, the README's two commands. The embedded servers keep their data under var/ between runs, manage.py in
another shell reaches them, and Ctrl-C stops everything and ends `make run` with status 0."""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.processes import fresh_clone, processes_in, wait_for
from tests.sink import free_port

pytestmark = pytest.mark.worker

# Makes the pseudo-terminal on its stdin its controlling terminal (it runs in a new session), then becomes the
# command: `make run` as typed in a terminal, where Ctrl-C signals the terminal's foreground process group.
IN_A_TERMINAL = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execvp(sys.argv[1], sys.argv[1:])"
)


def newcomer_env(**overrides: str) -> dict[str, str]:
    """A shell's environment with nothing of this test run in it (tests/settings.py sets some in os.environ)."""
    ours = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "PYTHONPATH", "DEBUG")
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ours and not name.startswith(("MAIL_", "DJANGO_", "PROMETHEUS_"))
    }
    return {**env, **overrides}


class MakeRun:
    """`make run` in a terminal of its own (a pseudo-terminal), whose output is kept."""

    def __init__(self, checkout: Path, env: dict[str, str]) -> None:
        self._terminal, user_side = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-c", IN_A_TERMINAL, "make", "run"],
            cwd=checkout, env=env, stdin=user_side, stdout=user_side, stderr=user_side, start_new_session=True,
        )  # fmt: skip
        os.close(user_side)
        self._output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._terminal, 65536)
            except OSError:  # the terminal's last user is gone
                return
            if not data:
                return
            self._output.extend(data)

    def output(self) -> str:
        return self._output.decode(errors="replace")

    def wait_until_ready(self) -> None:
        wait_for(
            lambda: "mailservice is ready" in self.output() or self.process.poll() is not None,
            timeout=240,
            what="make run to say it is ready",
        )
        assert self.process.poll() is None, self.output()

    def ctrl_c(self) -> None:
        os.write(self._terminal, b"\x03")

    def wait(self) -> int:
        returncode = self.process.wait(timeout=120)
        self._reader.join(timeout=10)
        return returncode

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        os.close(self._terminal)


@pytest.fixture
def clone():
    # Not tmp_path: as root, PostgreSQL's OS user must enter it, and pytest keeps tmp_path in a 0700 directory.
    destination = Path(tempfile.mkdtemp(prefix="mailservice-clone-"))
    destination.chmod(0o755)
    yield fresh_clone(destination)
    for leftover in processes_in(destination):
        os.kill(int(leftover.split(" ", 1)[0]), signal.SIGKILL)
    shutil.rmtree(destination, ignore_errors=True)


def request(method: str, url: str, key: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_make_run_on_a_fresh_laptop_sends_keeps_its_data_and_stops_cleanly(clone):
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    env = newcomer_env(MAIL_EMBEDDED_SERVICES="1", BIND=f"127.0.0.1:{port}", WEB_WORKERS="1", WEB_THREADS="2",
                       WORKER_CONCURRENCY="1", MAIL_SMTP_LISTEN=f"127.0.0.1:{free_port()}")  # fmt: skip

    first = MakeRun(clone, env)
    try:
        first.wait_until_ready()
        shown = first.output()
        for said in ("Started PostgreSQL 18 (embedded)", "data in var/postgres", "Started Redis 6.2",
                     "data in var/redis", f"{api}/api/v1/emails", f"{api}/api/docs/", f"{api}/dashboard/",
                     f"{api}/admin/", ".venv/bin/python manage.py create_api_key my-app"):  # fmt: skip
            assert said in shown

        # Another shell, with nothing in its environment: the checkout's settings find the embedded servers.
        made = subprocess.run(
            [".venv/bin/python", "manage.py", "create_api_key", "my-app"],
            cwd=clone, env=newcomer_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip().splitlines()[-1]

        status, accepted = request("POST", f"{api}/api/v1/emails", key, {
            "from": "Shop <shop@example.com>", "to": ["alice@example.org"], "subject": "Your order", "text": "Thanks!",
        })  # fmt: skip
        assert status == 202, accepted
        email_url = f"{api}/api/v1/emails/{accepted['id']}"
        wait_for(lambda: request("GET", email_url, key)[1].get("status") == "SENT", timeout=60, what="SENT")
        # The clone's code ran (its settings put the outbox in its var/), not the checkout's the venv was made from.
        assert (clone / "var" / "outbox" / f"{accepted['id']}.eml").is_file()
        # Encrypted at rest by default, with the key make run made and keeps (mode 600) in var/.
        assert (clone / "var" / "encryption_keys").stat().st_mode & 0o777 == 0o600
        stored = subprocess.run(
            [".venv/bin/python", "manage.py", "shell", "-c", "from django.db import connection\n"
             "with connection.cursor() as c:\n c.execute('SELECT content::text FROM emails_email')\n"
             " print(c.fetchone()[0])"],
            cwd=clone, env=newcomer_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert '"enc:f:' in stored.stdout and "Your order" not in stored.stdout, stored.stderr

        first.ctrl_c()
        assert first.wait() == 0, first.output()
    finally:
        first.close()
    assert "make: ***" not in first.output()
    assert "Stopped PostgreSQL" in first.output()
    assert processes_in(clone) == []
    assert not (clone / "var" / "embedded.json").exists()

    second = MakeRun(clone, env)
    try:
        second.wait_until_ready()
        status, found = request("GET", email_url, key)
        assert (status, found["status"], found["subject"]) == (200, "SENT", "Your order")
        # As `kill` and systemd stop it: SIGTERM to the process group. make dies of it, and takes nothing along.
        os.killpg(second.process.pid, signal.SIGTERM)
        assert second.wait() == -signal.SIGTERM
    finally:
        second.close()
    assert "Error 143" not in second.output()
    assert "Stopped PostgreSQL" in second.output()
    assert processes_in(clone) == []


def test_a_second_make_run_in_the_same_checkout_is_refused_and_starts_nothing(clone):
    (clone / "var").mkdir()
    (clone / "var" / "embedded.json").write_text(json.dumps({"pid": os.getpid()}))  # a make run that runs

    result = subprocess.run(["make", "run"], cwd=clone, env=newcomer_env(), capture_output=True, text=True, timeout=120)

    assert result.returncode != 0
    assert f"mailservice already runs from this checkout (process {os.getpid()})" in result.stderr
    assert processes_in(clone) == []
    assert not (clone / "var" / "postgres").exists()
