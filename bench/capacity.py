"""What one accepted email costs each part of the service, for the README's capacity model:
`.venv/bin/python -m bench.capacity [COUNT]` (default 20,000).

It runs everything on servers of its own, so that nothing else on the machine is counted: an embedded PostgreSQL
with pg_stat_statements, an embedded Redis, an aiosmtpd sink (bench/sink.py, 0 ms), gunicorn as gunicorn.conf.py
says, one Celery worker as `make bench`'s, encryption at rest on. Two phases, measured apart:
1. accept: COUNT emails (bench/load.py's one-line EMAIL) in batches of 500 through the REST API, no worker running;
2. deliver: a worker sends them all to the sink.
For each phase: SQL statements, rows they returned or changed, WAL bytes, Redis commands, and CPU milliseconds of
the web processes, the worker processes, PostgreSQL's and Redis's, each per email. Not part of `make bench`: it
says where the time goes, not how fast it is against a peer.

Not in `make bench`'s venv: it needs the embedded servers (`.venv`, `make test` installs them)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from launcher.embedded import EmbeddedPostgres, EmbeddedRedis  # noqa: E402 - after the path

BIN = Path(sys.executable).parent
DATABASE = "mailservice_capacity"
MARK = "/* capacity */"  # this script's own queries, left out of the counts
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def cpu_seconds(root_pid: int) -> float:
    """User and system CPU of a process and its descendants, as /proc counts it."""
    total, pids = 0.0, [root_pid]
    while pids:
        pid = pids.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
            pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total


def postmaster_pid(data: Path) -> int:
    return int((data / "postmaster.pid").read_text().split()[0])


def redis_pid(redis_url: str) -> int:
    import redis

    return int(redis.Redis.from_url(redis_url).info("server")["process_id"])


class Counters:
    """What PostgreSQL and Redis count, and the processes' CPU, read before and after a phase."""

    def __init__(self, database_url: str, redis_url: str, pids: dict[str, int]) -> None:
        import psycopg2
        import redis

        self.db = psycopg2.connect(database_url)
        self.db.autocommit = True
        self.redis = redis.Redis.from_url(redis_url)
        self.pids = pids

    def reset(self) -> None:
        with self.db.cursor() as cursor:
            cursor.execute(f"{MARK} SELECT pg_stat_statements_reset()")
        self.redis.config_resetstat()
        self.start = self._read()

    def _read(self) -> dict:
        with self.db.cursor() as cursor:
            cursor.execute(f"{MARK} SELECT pg_current_wal_lsn()")
            lsn = cursor.fetchone()[0]
        return {"lsn": lsn, "cpu": {name: cpu_seconds(pid) for name, pid in self.pids.items()}}

    def since_reset(self, count: int) -> dict:
        end = self._read()
        with self.db.cursor() as cursor:
            cursor.execute(
                f"""{MARK} SELECT coalesce(sum(calls), 0), coalesce(sum(rows), 0) FROM pg_stat_statements
                     WHERE query NOT LIKE %s AND query NOT LIKE 'BEGIN%%' AND query NOT LIKE 'COMMIT%%'""",
                [MARK + "%"],
            )
            statements, rows = cursor.fetchone()
            cursor.execute(
                f"""{MARK} SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
                     WHERE query LIKE 'BEGIN%%' OR query LIKE 'COMMIT%%'"""
            )
            (transaction_statements,) = cursor.fetchone()
            cursor.execute(f"{MARK} SELECT pg_wal_lsn_diff(%s, %s)", [end["lsn"], self.start["lsn"]])
            wal = float(cursor.fetchone()[0])
        commands = self.redis.info("commandstats")
        redis_calls = sum(
            stat["calls"] for name, stat in commands.items() if name not in ("cmdstat_config", "cmdstat_info")
        )
        return {
            "statements": float(statements) / count,
            "begin_commit": float(transaction_statements) / count,
            "rows": float(rows) / count,
            "wal_bytes": wal / count,
            "redis_commands": redis_calls / count,
            "cpu_ms": {name: (end["cpu"][name] - self.start["cpu"][name]) * 1000 / count for name in self.pids},
            "redis_by_command": {
                name.removeprefix("cmdstat_"): stat["calls"] / count
                for name, stat in commands.items()
                if name not in ("cmdstat_config", "cmdstat_info")
            },
        }

    def sent(self) -> int:
        with self.db.cursor() as cursor:
            cursor.execute(f"{MARK} SELECT count(*) FROM emails_email WHERE status = 'SENT'")
            return cursor.fetchone()[0]


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    scratch = Path(tempfile.mkdtemp(prefix="mailservice-capacity-"))
    os.chmod(scratch, 0o755)  # the cluster's owner (postgres, when run as root) must reach its directory
    postgres = EmbeddedPostgres(scratch / "postgres", durable=True)
    redis_server = EmbeddedRedis(scratch / "redis", durable=False)
    children: list[subprocess.Popen] = []
    try:
        postgres.start()
        with_statements(postgres)
        redis_server.start()
        database_url, redis_url = postgres.url(DATABASE), redis_server.url(0)
        sink_port, sink_out = free_port(), scratch / "sink.txt"
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mailservice.settings", "DATABASE_URL": database_url,
               "REDIS_URL": redis_url, "SECRET_KEY": secrets.token_urlsafe(50), "LOG_LEVEL": "WARNING",
               "MAIL_ENCRYPTION_KEYS": Fernet.generate_key().decode(), "PROMETHEUS_MULTIPROC_DIR": str(scratch),
               "MAIL_PROVIDERS": json.dumps([{"name": "sink", "backend": "smtp",
                                              "options": {"host": "127.0.0.1", "port": sink_port}}])}  # fmt: skip
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        key = subprocess.run([sys.executable, "manage.py", "create_api_key", "capacity"], cwd=ROOT, env=env,
                             check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]  # fmt: skip

        def start(args: list[str], log: str) -> subprocess.Popen:
            process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=open(scratch / f"{log}.log", "w"),
                                       stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
            children.append(process)
            return process

        def start_worker(log: str) -> subprocess.Popen:
            process = start([str(BIN / "celery"), "-A", "mailservice", "worker", "--concurrency", "3", "--loglevel",
                             "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"], log)  # fmt: skip
            wait_for(lambda: " ready." in (scratch / f"{log}.log").read_text(), 60, "the worker")
            return process

        start([sys.executable, "-m", "bench.sink", str(sink_port), "0", str(sink_out)], "sink")
        web_port = free_port()
        web = start([str(BIN / "gunicorn"), "mailservice.wsgi", "--bind", f"127.0.0.1:{web_port}"], "web")
        url = f"http://127.0.0.1:{web_port}"
        wait_for(lambda: _accepts(web_port) and _accepts(sink_port), 60, "gunicorn and the sink")
        worker = start_worker("worker")
        pids = {"web": web.pid, "worker": worker.pid, "postgres": postmaster_pid(scratch / "postgres"),
                "redis": redis_pid(redis_url)}  # fmt: skip
        counters = Counters(database_url, redis_url, pids)

        # Warm: every process has its connections and imports; then the worker stops, for phase 1 alone.
        _load(url, key, 4, 500)
        wait_for(lambda: counters.sent() >= 2000, 120, "the warm-up sent")
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)

        counters.reset()
        _load(url, key, count // 500, 500)
        accept = counters.since_reset(count)

        worker = start_worker("worker2")
        counters.pids["worker"] = worker.pid
        counters.reset()  # at once: a worker takes up queued tasks as soon as it is ready
        before = counters.sent()
        wait_for(lambda: counters.sent() >= 2000 + count, 600, "every email sent")
        deliver = counters.since_reset(2000 + count - before)
        report(count, accept, deliver)
    finally:
        for process in reversed(children):
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        redis_server.stop()
        postgres.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def with_statements(postgres: EmbeddedPostgres) -> None:
    """pg_stat_statements loaded (it must be at the server's start) and made in the service's database."""
    import psycopg2

    for database, statements in (
        ("postgres", ["ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'",
                      "ALTER SYSTEM SET pg_stat_statements.track = 'all'", f"CREATE DATABASE {DATABASE}"]),
        (DATABASE, ["CREATE EXTENSION pg_stat_statements"]),
    ):  # fmt: skip
        db = psycopg2.connect(postgres.url(database))
        db.autocommit = True
        with db.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
        db.close()
        if database == "postgres":
            postgres.stop()
            postgres.start()


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _load(url: str, key: str, requests: int, size: int) -> None:
    subprocess.run([sys.executable, "-m", "bench.load", url, key, "batch", "4", str(requests), str(size)], cwd=ROOT,
                   check=True, capture_output=True)  # fmt: skip


def report(count: int, accept: dict, deliver: dict) -> None:
    print(f"\nmailservice capacity — {os.cpu_count()} cores, {count} emails, encryption on; per email:\n")
    print(f"{'':28} {'accept':>10} {'deliver':>10}")
    for label, name in (("SQL statements", "statements"), ("  and BEGIN/COMMIT", "begin_commit"),
                        ("rows returned or changed", "rows"), ("WAL bytes", "wal_bytes"),
                        ("Redis commands", "redis_commands")):  # fmt: skip
        print(f"{label:28} {accept[name]:10.2f} {deliver[name]:10.2f}")
    for part in ("web", "worker", "postgres", "redis"):
        print(f"{'CPU ms, ' + part:28} {accept['cpu_ms'][part]:10.3f} {deliver['cpu_ms'][part]:10.3f}")
    print("\nRedis commands by name (accept / deliver):")
    for name in sorted({*accept["redis_by_command"], *deliver["redis_by_command"]}):
        print(
            f"  {name:24} {accept['redis_by_command'].get(name, 0):8.3f} {deliver['redis_by_command'].get(name, 0):8.3f}"
        )
    out = ROOT / "var" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "capacity.json").write_text(json.dumps({"count": count, "accept": accept, "deliver": deliver}, indent=2))
    print(f"\nfigures: {out / 'capacity.json'}")


if __name__ == "__main__":
    main()
