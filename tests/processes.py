"""Real processes for the tests that are about queueing: Celery workers, beat, gunicorn, a Redis of their own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import redis

from tests.sink import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def wait_for(condition: Callable[[], object], *, timeout: float, what: str, interval: float = 0.05) -> object:
    """Polls `condition` until it returns something true; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Process:
    """A child process in its own session, so that stop() and kill() reach its children too."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}-{int(time.time() * 1000)}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup, as when a machine dies."""
        self._signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        # Children may outlive a TERMed parent: make sure the group is gone.
        self._signal(signal.SIGKILL)
        self._log.close()

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)


def start_worker(env: dict[str, str], log_dir: Path, *, concurrency: int = 2, name: str = "worker") -> Process:
    args = [str(BIN / "celery"), "-A", "mailservice", "worker", "--loglevel", "INFO",
            "--concurrency", str(concurrency), "--hostname", f"{name}-{time.monotonic_ns()}@%h",
            "--without-gossip", "--without-mingle"]  # fmt: skip
    return Process(name, args, env, log_dir)


def start_beat(env: dict[str, str], log_dir: Path) -> Process:
    schedule = log_dir / f"beat-schedule-{time.monotonic_ns()}"
    args = [str(BIN / "celery"), "-A", "mailservice", "beat", "--loglevel", "INFO", "--schedule", str(schedule)]
    return Process("beat", args, env, log_dir)


def start_web(env: dict[str, str], log_dir: Path) -> tuple[Process, str]:
    port = free_port()
    args = [str(BIN / "gunicorn"), "mailservice.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    process = Process("web", args, env, log_dir)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(answers, timeout=30, what="gunicorn to answer /health")
    return process, url


class RedisServer:
    """A Redis server of the test's own, which the test may stop and start again on the same port."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_dir = log_dir
        self.process: Process | None = None

    def start(self) -> RedisServer:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = Process("redis", args, dict(os.environ), self.log_dir)
        client = redis.Redis(port=self.port)
        wait_for(lambda: _pings(client), timeout=10, what=f"redis on port {self.port}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
