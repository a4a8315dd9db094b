"""`make run` and `make test`.

    python -m launcher run            # every process of the Procfile (through honcho) until Ctrl-C
    python -m launcher test [ARGS]    # pytest ARGS

Each uses the PostgreSQL and Redis that DATABASE_URL and REDIS_URL name, or that answer at their default addresses
(127.0.0.1:5432 and 127.0.0.1:6379); for each that does neither, it starts an embedded one (launcher/embedded.py)
and stops it at the end. MAIL_EMBEDDED_SERVICES=1 embeds even where a server answers at the default address (the
environment's URLs still win), 0 never.

`run` keeps the embedded servers' data under var/ and writes their addresses to var/embedded.json while they run,
where the settings of manage.py commands run from the checkout find them. `test` gives pytest throwaway ones."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from cryptography.fernet import Fernet

from launcher.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServerError,
    postgres_answers,
    redis_answers,
)

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
# Read by mailservice/settings.py (embedded_servers): the URLs of the embedded servers while `run` runs.
STATE_FILE = VAR / "embedded.json"
# The embedded servers' password, made once: the PostgreSQL cluster in var/postgres keeps it.
PASSWORD_FILE = VAR / "embedded_password"
BIN = Path(sys.executable).parent
DATABASE = "mailservice"


class LaunchError(Exception):
    """Stops the launch; the message says why."""


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test"):
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdout.reconfigure(line_buffering=True)  # in order with the children's output, through a pipe too
    try:
        return run() if argv[0] == "run" else test(argv[1:])
    except (LaunchError, EmbeddedServerError) as exc:
        print(f"make {argv[0]}: {exc}", file=sys.stderr)
        return 1


def run() -> int:
    VAR.mkdir(exist_ok=True)
    (VAR / "outbox").mkdir(exist_ok=True)
    _refuse_a_second_run()
    _make_secret_key()
    _make_encryption_key()
    shutil.rmtree(VAR / "prometheus", ignore_errors=True)  # counters start again with the processes
    embed_postgres, embed_redis = servers_to_embed(os.environ)
    env = _child_env()
    state: dict[str, object] = {"pid": os.getpid()}
    data: list[str] = []  # where the embedded servers keep it
    with terminal_foreground(), Supervisor(forward=signal.SIGTERM) as supervisor, contextlib.ExitStack() as servers:
        if embed_postgres:
            postgres = EmbeddedPostgres(VAR / "postgres", password=_password())
            servers.callback(_announce_stop, postgres.stop, "PostgreSQL")
            postgres.start()
            env["DATABASE_URL"] = state["DATABASE_URL"] = postgres.url(DATABASE)
            data.append("var/postgres")
            print(
                f"Started PostgreSQL {postgres.version} (embedded) on 127.0.0.1:{postgres.port}: data in var/postgres"
            )
        if embed_redis and not supervisor.stop_requested:
            redis = EmbeddedRedis(VAR / "redis", password=_password())
            servers.callback(_announce_stop, redis.stop, "Redis")
            redis.start()
            env["REDIS_URL"] = state["REDIS_URL"] = redis.url()
            data.append("var/redis")
            print(f"Started Redis {redis.version} (embedded) on 127.0.0.1:{redis.port}: data in var/redis")
        _write_state(state)
        servers.callback(STATE_FILE.unlink, missing_ok=True)
        servers.callback(supervisor.stop_child)  # first: the processes that use the servers

        steps = [["ensure_database"], ["migrate", "--no-input"], ["collectstatic", "--no-input", "--verbosity", "0"]]
        for step in steps:
            if supervisor.stop_requested:
                return 0
            returncode = supervisor.call([sys.executable, "manage.py", *step], env=env)
            if returncode and not supervisor.stop_requested:
                return returncode

        if supervisor.stop_requested:
            return 0
        # In a session of its own, like the servers: a Ctrl-C reaches only this process, which stops the Procfile's
        # processes (honcho) first, the servers they use after.
        supervisor.start([str(BIN / "honcho"), "start"], env=env, new_session=True)
        base_url = _base_url(env.get("BIND", "127.0.0.1:8000"))
        if _wait_for_health(base_url, supervisor):
            _print_ready(base_url, embedded_data=data)
        returncode = supervisor.wait()
        return 0 if supervisor.stop_requested else returncode


def test(pytest_args: list[str]) -> int:
    embed_postgres, embed_redis = servers_to_embed(os.environ)
    env = _child_env()
    with Supervisor(forward=signal.SIGINT) as supervisor, contextlib.ExitStack() as servers:
        if embed_postgres or embed_redis:
            scratch = Path(tempfile.mkdtemp(prefix="mailservice-test-"))
            servers.callback(shutil.rmtree, scratch, ignore_errors=True)
            scratch.chmod(0o755)  # as root, PostgreSQL's own OS user enters it
        if embed_postgres:
            postgres = EmbeddedPostgres(scratch / "postgres", durable=False)
            servers.callback(postgres.stop)
            postgres.start()
            env["DATABASE_URL"] = postgres.url(DATABASE)
            print(f"Started PostgreSQL {postgres.version} (embedded, for this run) on 127.0.0.1:{postgres.port}")
        if embed_redis:
            redis = EmbeddedRedis(scratch / "redis", durable=False)
            servers.callback(redis.stop)
            redis.start()
            env["REDIS_URL"] = redis.url()
            print(f"Started Redis {redis.version} (embedded, for this run) on 127.0.0.1:{redis.port}")
        if supervisor.stop_requested:
            return 130
        servers.callback(supervisor.stop_child)  # first: the tests that use the servers
        # In a session of its own: a stop request reaches pytest once, as SIGINT, which runs its teardown (the
        # processes and servers its tests started); a SIGTERM would end it at once.
        return supervisor.call([str(BIN / "pytest"), *pytest_args], env=env, new_session=True)


def servers_to_embed(env: dict[str, str] | os._Environ) -> tuple[bool, bool]:
    """Whether to embed (PostgreSQL, Redis): each one that the environment does not name (DATABASE_URL, REDIS_URL
    always win) and that does not answer at its default address, or whatever answers there with
    MAIL_EMBEDDED_SERVICES=1; none with 0."""
    value = env.get("MAIL_EMBEDDED_SERVICES", "").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False, False
    if value and value not in ("1", "true", "yes", "on"):
        raise LaunchError(f"MAIL_EMBEDDED_SERVICES must be 1 (embedded servers) or 0 (none), not {value!r}")
    forced = bool(value)
    return (
        not env.get("DATABASE_URL") and (forced or not postgres_answers(5432)),
        not env.get("REDIS_URL") and (forced or not redis_answers(6379)),
    )


class Supervisor:
    """Runs one child at a time. A stop request (SIGINT, SIGTERM, SIGHUP) is remembered and passed on to the child
    of the moment as `forward`; after it, the caller stops what it started, in order."""

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, *, forward: signal.Signals) -> None:
        self.forward = forward
        self.stop_requested = False
        self.child: subprocess.Popen | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Supervisor:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._request_stop)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def stop_child(self) -> None:
        """Stops a child still running (after an error), as a stop request would; kills it 30 s later."""
        child = self.child
        if child is None or child.poll() is not None:
            return
        child.send_signal(self.forward)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def _request_stop(self, signum: int, frame: object) -> None:
        self.stop_requested = True
        self._forward()

    def _forward(self) -> None:
        child = self.child
        if child is not None and child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, self.forward)

    def start(self, args: list[str], *, env: dict[str, str], new_session: bool = False) -> subprocess.Popen:
        self.child = subprocess.Popen(args, cwd=ROOT, env=env, start_new_session=new_session)
        if self.stop_requested:  # asked while it was starting, before it could be told
            self._forward()
        return self.child

    def wait(self) -> int:
        assert self.child is not None
        return self.child.wait()

    def call(self, args: list[str], *, env: dict[str, str], new_session: bool = False) -> int:
        self.start(args, env=env, new_session=new_session)
        return self.wait()


@contextlib.contextmanager
def terminal_foreground() -> Iterator[None]:
    """Ctrl-C signals the terminal's foreground process group, make's, and make then dies of SIGINT (status 130)
    whatever its recipe does. So this process takes the terminal's foreground in a process group of its own: the
    Ctrl-C reaches it alone, it stops everything in order and exits 0, and make with it. The terminal goes back to
    make's group at the end. Without a terminal, or in the background, nothing changes."""
    try:
        terminal = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        yield
        return
    try:
        make_group = os.getpgrp()
        if os.tcgetpgrp(terminal) != make_group or not _lead_a_group():
            yield
            return
        # Ctrl-Z would stop this process alone, behind make's back, and leave the terminal to nobody.
        previous_tstp = signal.signal(signal.SIGTSTP, signal.SIG_IGN)
        _set_foreground(terminal, os.getpgrp())
        try:
            yield
        finally:
            _set_foreground(terminal, make_group)
            signal.signal(signal.SIGTSTP, previous_tstp)
    finally:
        os.close(terminal)


def _lead_a_group() -> bool:
    try:
        os.setpgid(0, 0)
    except OSError:  # a session leader cannot move
        return False
    return True


def _set_foreground(terminal: int, group: int) -> None:
    # A process outside the foreground group that changes it is sent SIGTTOU, which would stop it.
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        with contextlib.suppress(OSError):  # make's group may be gone (make killed)
            os.tcsetpgrp(terminal, group)
    finally:
        signal.signal(signal.SIGTTOU, previous)


def _child_env() -> dict[str, str]:
    # The checkout's own code first, whichever checkout the virtualenv was installed from.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def _refuse_a_second_run() -> None:
    pid = _running_launcher()
    if pid is not None:
        raise LaunchError(f"mailservice already runs from this checkout (process {pid}): stop it first (Ctrl-C)")


def _running_launcher() -> int | None:
    try:
        pid = int(json.loads(STATE_FILE.read_text())["pid"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def _write_state(state: dict[str, object]) -> None:
    # Mode 600: it holds the servers' password.
    temporary = STATE_FILE.with_suffix(".tmp")
    temporary.unlink(missing_ok=True)
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        json.dump(state, file)
    temporary.replace(STATE_FILE)


def _make_secret_key() -> None:
    """A key of this checkout's own, made once: the settings read it when the environment gives no SECRET_KEY."""
    path = VAR / "secret_key"
    if path.is_file() and path.read_text().strip():
        return
    _write_secret(path, secrets.token_urlsafe(50))
    print(f"made a SECRET_KEY in {path.relative_to(ROOT)}")


def _make_encryption_key() -> None:
    """A key of this checkout's own, made once, so that what `make run` stores is encrypted at rest: the settings
    read it when the environment gives no MAIL_ENCRYPTION_KEYS. Never replaced: the rows sealed with it need it."""
    path = VAR / "encryption_keys"
    if path.is_file() and path.read_text().strip():
        return
    _write_secret(path, Fernet.generate_key().decode())
    print(f"made an encryption key (MAIL_ENCRYPTION_KEYS) in {path.relative_to(ROOT)}")


def _password() -> str:
    if PASSWORD_FILE.is_file():
        return PASSWORD_FILE.read_text().strip()
    if (VAR / "postgres" / "PG_VERSION").exists():
        raise LaunchError(
            f"the PostgreSQL cluster in var/postgres was made with the password in {PASSWORD_FILE.name}, which is "
            "gone: remove var/postgres (its data goes with it) to start with a new one"
        )
    _write_secret(PASSWORD_FILE, secrets.token_urlsafe(24))
    return PASSWORD_FILE.read_text().strip()


def _write_secret(path: Path, value: str) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(value + "\n")


def _announce_stop(stop: Callable[[], bool], name: str) -> None:
    if stop():
        print(f"Stopped {name}")


def _base_url(bind: str) -> str:
    host, _, port = bind.rpartition(":")
    if host in ("", "0.0.0.0", "[::]"):  # noqa: S104 - only shown, as the address to open
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def _wait_for_health(base_url: str, supervisor: Supervisor, timeout: float = 120) -> bool:
    """Whether the API answers /health before honcho stops, a stop is requested, or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not supervisor.stop_requested and supervisor.child.poll() is None:
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=5) as response:  # noqa: S310 - our own URL
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def _print_ready(base_url: str, *, embedded_data: list[str]) -> None:
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    lines = [
        "",
        f"mailservice is ready (Ctrl-C stops it{' and the embedded servers' if embedded_data else ''}):",
        f"  API        {base_url}/api/v1/emails",
        f"  API docs   {base_url}/api/docs/",
        f"  dashboard  {base_url}/dashboard/",
        f"  admin      {base_url}/admin/",
        f"  SMTP       {os.environ.get('MAIL_SMTP_LISTEN', '127.0.0.1:2587')} (AUTH: any user, an API key as password)",
        f"  Postmark   {base_url}/email (X-Postmark-Server-Token: an API key)",
        f"  stream     Redis stream {os.environ.get('MAIL_STREAM', 'mailservice:submit')}, results on <stream>:results",
    ]
    if embedded_data:
        lines.append(f"  data       {', '.join(embedded_data)}, kept between runs")
    lines += [
        f"Make an API key:     {python} manage.py create_api_key my-app",
        f"Make an admin user:  {python} manage.py createsuperuser",
        "",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
