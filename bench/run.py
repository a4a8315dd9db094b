"""`make bench`: mailservice and its peers measured side by side in one run, on loopback.

Starts its own sinks (Postfix's smtp-sink for 0 ms, an aiosmtpd sink for 20 ms), Celery workers and
gunicorn against databases of its own, verifies every delivery at the sink (lost and duplicated
emails are counted by their id header), prints a table and writes var/bench/results-<time>.json.

The doors in beside the REST API: the Postmark batch (row 8, counted in rows), `manage.py smtpd` under 8
smtplib clients against a bare aiosmtpd server's ceiling (row 9, every 250 counted in rows) and the Redis stream
read by one and two `manage.py consume_stream` processes (row 10, every result counted, every email a row).
Row 11 is row 1's delivery with a webhook on every email's key, its deliveries counted at a local receiver.
Row 12 is row 1's delivery and row 4's batch ingest of a larger email (bench/load.py's RICH_EMAIL) with encryption
at rest on beside the same with it off, runs alternated.
Row 13 is delivery through an HTTP ESP: anymail's Postmark backend, ours and django-post_office's, against a fake
Postmark API on loopback answering after 20 ms (bench/fake_esp.py), each email counted there by its id header,
beside that backend alone (bench/send_ceiling.py): as many sends at once, no queue or database.
Row 5's end to end is bounded by row 4's ingest and by sending alone (bench/send_ceiling.py: our SMTP provider
with no queue or database, and smtplib sending ready bytes), each measured on the whole machine: the table shows
those bounds beside 4x the peer.
Row 14 is delivery by two worker groups, through a PgBouncer of the bench's own in transaction pooling mode
(bench/pgbouncer.py) beside the same connected to PostgreSQL directly, runs alternated.

BENCH_CODE=<a checkout> measures that checkout's code (its manage.py, gunicorn.conf.py, workers) with this
bench, e.g. a `git worktree` of an older commit beside this one.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "bench"
POSTFIX = OUT / "postfix"
PYTHON = sys.executable
BIN = Path(PYTHON).parent
# Databases and a Redis db of the bench's own (recreated and flushed by each run); other names for a second
# run beside this one.
DB = os.environ.get("BENCH_DATABASE", "mailservice_bench")
PO_DB = os.environ.setdefault("POSTOFFICE_DB", "postoffice_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
# The broker of the peer's Celery mode (row 5's peer), flushed by each run.
PO_BROKER_URL = os.environ.get("BENCH_PO_BROKER_URL", "redis://127.0.0.1:6379/14")
WORKER_CONCURRENCY = int(os.environ.get("BENCH_WORKER_CONCURRENCY", "3"))
DELIVERY_COUNT = int(os.environ.get("BENCH_DELIVERY_COUNT", "10000"))
# Every row with encryption at rest on, as `make run` runs (a key made for the run; row 12 sets it per mode).
# BENCH_ENCRYPTION=off measures them without.
if os.environ.get("BENCH_ENCRYPTION", "on") == "on":
    os.environ.setdefault("MAIL_ENCRYPTION_KEYS", Fernet.generate_key().decode())
else:
    os.environ["MAIL_ENCRYPTION_KEYS"] = ""  # set and empty: off, whatever var/ holds
# A subset while working on one part, e.g. BENCH_ONLY=ingest; the table shows what ran.
EVERY_ROW = "delivery,delivery20,http,ingest,ratelimit,postmark,smtp,stream,webhooks,encryption,pgbouncer"
ONLY = set(os.environ.get("BENCH_ONLY", EVERY_ROW).split(","))
# The code measured: this checkout, or BENCH_CODE's. The bench's own modules always run from this one.
CODE = Path(os.environ.get("BENCH_CODE", ROOT)).resolve()
if CODE != ROOT:
    # This process's Django (models, services) is the measured code's too; Celery's Django fixup puts the
    # working directory first on sys.path.
    sys.path.insert(0, str(CODE))
    os.chdir(CODE)
    os.environ["PYTHONPATH"] = str(CODE)
SMTP_CLIENTS = 8
SMTP_SECONDS = 5
# Row 10's stream: a name of the bench's own, so that nothing else reading MAIL_STREAM's default takes its entries.
STREAM = "bench:submit"
STREAM_COUNT = int(os.environ.get("BENCH_STREAM_COUNT", "10000"))
# Row 14's server connections: as many as one worker group has processes (each holds one client connection), so
# that both groups' transactions share half as many server connections as they have clients, as pooling is meant to.
PGBOUNCER_POOL_SIZE = WORKER_CONCURRENCY
SCRATCH = Path(tempfile.mkdtemp(prefix="mailservice-bench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))

os.environ.update(
    DJANGO_SETTINGS_MODULE="mailservice.settings",
    DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB}",
    REDIS_URL=REDIS_URL,
    LOG_LEVEL="WARNING",
    PROMETHEUS_MULTIPROC_DIR=str(SCRATCH / "prometheus"),
    MAIL_PROVIDERS='[{"name": "sink", "backend": "locmem"}]',
    # Row 11's receiver is on loopback, which webhooks refuse otherwise.
    MAIL_WEBHOOK_ALLOW_PRIVATE="1",
)
# The settings refuse to start without a key (DEBUG is off, as in production): one for this run's processes only.
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
(SCRATCH / "prometheus").mkdir()

children: list[subprocess.Popen] = []


# --- processes ---------------------------------------------------------------------------------


def start(args: list[str], env: dict | None = None, log: str = "process", cwd: Path = ROOT) -> subprocess.Popen:
    out = open(SCRATCH / f"{log}.log", "ab")
    process = subprocess.Popen(args, cwd=cwd, env={**os.environ, **(env or {})}, stdout=out, stderr=out,
                               start_new_session=True)  # fmt: skip
    children.append(process)
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if process in children:
        children.remove(process)


def stop_all() -> None:
    for process in list(children):
        stop(process)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(interval)
    return result


def log_has(name: str, text: str) -> bool:
    return any(text in Path(p).read_text(errors="replace") for p in glob.glob(str(SCRATCH / f"{name}*.log")))


# --- sinks ---------------------------------------------------------------------------------------


def ensure_smtp_sink() -> Path:
    """Postfix's smtp-sink, extracted from Debian's package (no MTA is installed or started)."""
    binary = POSTFIX / "usr" / "sbin" / "smtp-sink"
    if not binary.exists():
        download = Path(tempfile.mkdtemp())
        fetched = subprocess.run(["apt-get", "download", "postfix"], cwd=download, capture_output=True, text=True)
        if fetched.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(["apt-get", "download", "postfix"], cwd=download, check=True)
        deb = next(download.glob("postfix_*.deb"))
        POSTFIX.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg", "-x", str(deb), str(POSTFIX)], check=True)
    return binary


class SmtpSink:
    """Postfix's smtp-sink, dumping each message to a file: ids and arrival times are read back."""

    def __init__(self, name: str) -> None:
        self.port = free_port()
        self.dump = SCRATCH / f"dump-{name}"
        self.dump.mkdir()
        binary = ensure_smtp_sink()
        env = {"LD_LIBRARY_PATH": str(POSTFIX / "usr" / "lib" / "postfix")}
        self.process = start([str(binary), "-u", "root", "-d", f"{self.dump}/%H%M%S.", f"127.0.0.1:{self.port}",
                              "1000"], env=env, log=f"smtp-sink-{name}")  # fmt: skip
        wait_for(lambda: _accepts(self.port), 10, "smtp-sink")

    def arrivals(self) -> list[tuple[str, float]]:
        found = []
        for path in self.dump.iterdir():
            with path.open("rb") as f:
                head = f.read(4096)
            email_id = "-"
            for line in head.split(b"\n"):
                name, _, value = line.partition(b":")
                if name.lower() in (b"x-mailservice-id", b"x-bench-id"):
                    email_id = value.strip().decode()
                    break
            found.append((email_id, path.stat().st_mtime))
        return found

    def count(self) -> int:
        return sum(1 for _ in self.dump.iterdir())

    def close(self) -> None:
        stop(self.process)


class LatencySink:
    """The aiosmtpd sink of bench/sink.py, answering each message after `latency` seconds."""

    def __init__(self, name: str, latency: float) -> None:
        self.port = free_port()
        self.out = SCRATCH / f"arrivals-{name}.txt"
        self.process = start([PYTHON, "-m", "bench.sink", str(self.port), str(latency), str(self.out)],
                             log=f"sink-{name}")  # fmt: skip
        wait_for(lambda: _accepts(self.port), 10, "aiosmtpd sink")

    def arrivals(self) -> list[tuple[str, float]]:
        stop(self.process)
        return [(i, float(t)) for i, t in (line.split() for line in self.out.read_text().splitlines())]


class FakeEsp:
    """bench/fake_esp.py: Postmark's send API answering each request after `latency` seconds."""

    def __init__(self, name: str, latency: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.out = SCRATCH / f"arrivals-{name}.txt"
        self.process = start([PYTHON, "-m", "bench.fake_esp", str(self.port), str(latency), str(self.out)],
                             log=f"fake-esp-{name}")  # fmt: skip
        wait_for(lambda: _accepts(self.port), 10, "fake ESP")

    def provider(self) -> dict:
        """Our MAIL_PROVIDERS entry for it: anymail's Postmark backend, its API URL pointed here."""
        return {"name": "postmark", "backend": "postmark", "options": {"server_token": "bench", "api_url": self.url}}

    def arrivals(self) -> list[tuple[str, float]]:
        stop(self.process)
        return [(i, float(t)) for i, t in (line.split() for line in self.out.read_text().splitlines())]


def _accepts(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def verify(arrivals: list[tuple[str, float]], expected: set[str]) -> dict:
    counts = Counter(i for i, _ in arrivals)
    times = sorted(t for _, t in arrivals)
    span = (times[-1] - times[0]) if len(times) > 1 else 0.0
    return {
        "delivered": len(set(counts) & expected),
        "lost": len(expected - set(counts)),
        "duplicates": sum(counts.values()) - len(counts),
        "seconds": span,
        "per_second": len(arrivals) / span if span else 0.0,
    }


# --- databases -----------------------------------------------------------------------------------


def recreate_database(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(dbname="postgres", user="postgres", host="127.0.0.1")
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def setup_databases() -> None:
    recreate_database(DB)
    recreate_database(PO_DB)
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=CODE, check=True)
    subprocess.run([PYTHON, "-m", "django", "migrate", "-v0", "--settings", "bench.postoffice_settings"],
                   cwd=ROOT, check=True)  # fmt: skip
    import django

    django.setup()


def reset_mailservice(providers: list[dict]) -> None:
    clear_emails()
    os.environ["MAIL_PROVIDERS"] = json.dumps(providers)


def clear_emails() -> None:
    """No email rows, nothing queued: what a scenario finds afterwards is what it stored."""
    from django.db import connection

    from infra.redis import get_redis

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE emails_emailevent, emails_email, emails_idempotencykey CASCADE")
    get_redis().flushdb()


def clear_rows() -> None:
    """As clear_emails(), but the stream and its group are kept: a consumer is reading them (deleting the stream
    under a blocked read costs it an error and a backoff)."""
    from django.db import connection

    from infra.redis import get_redis

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE emails_emailevent, emails_email, emails_idempotencykey CASCADE")
    client = get_redis()
    stale = [name for name in client.scan_iter(count=1000) if not name.startswith(STREAM.encode())]
    if stale:
        client.delete(*stale)


def email_rows() -> int:
    from emails.models import Email

    return Email.objects.count()


def reset_postoffice() -> None:
    import psycopg2

    conn = psycopg2.connect(dbname=PO_DB, user="postgres", host="127.0.0.1")
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("TRUNCATE post_office_log, post_office_email, post_office_attachment_emails CASCADE")
    conn.close()


def accepted_emails(count: int, api_key_id: int | None = None, content: dict | None = None) -> list[str]:
    """`count` PENDING emails stored as the API stores them (sealed if this process's MAIL_ENCRYPTION_KEYS are
    set), not yet published. `content`: subject, text, html, metadata, instead of a subject and a line."""
    from django.utils import timezone

    from emails.models import Email

    now = timezone.now()
    content = content or {"subject": "Your order", "text": "Thank you for your order."}
    emails = [Email(from_email="Shop <shop@example.com>", to=["alice@example.org"], recipients=["alice@example.org"],
                    **content, created_at=now, next_attempt_at=now, api_key_id=api_key_id)
              for _ in range(count)]  # fmt: skip
    Email.objects.bulk_create(emails, batch_size=2000)
    return [str(e.id) for e in emails]


def sent_count() -> int:
    from emails.models import Email

    return Email.objects.filter(status=Email.Status.SENT).count()


def start_workers(
    count: int = 1,
    concurrency: int = WORKER_CONCURRENCY,
    name: str = "worker",
    queues: str = "",
    env: dict | None = None,
) -> list:
    workers = []
    for n in range(count):
        log = f"{name}-{n}-{time.monotonic_ns()}"
        workers.append(start([str(BIN / "celery"), "-A", "mailservice", "worker", "--concurrency", str(concurrency),
                              "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
                              "--hostname", f"{log}@%h", *(["-Q", queues] if queues else [])], env=env, log=log,
                             cwd=CODE))  # fmt: skip
        wait_for(lambda log=log: log_has(log, " ready."), 60, "a worker to be ready")
    return workers


def rss_mb(process: subprocess.Popen) -> float:
    """Memory of a process and all its children, in MB: proportional set size, so pages a forked child
    shares with its parent count once."""
    pids, total = [process.pid], 0
    while pids:
        pid = pids.pop()
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += int(next(line for line in f if line.startswith("Pss:")).split()[1])
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                pids += [int(c) for c in f.read().split()]
        except (FileNotFoundError, StopIteration, ProcessLookupError, PermissionError):
            pass
    return total / 1024


# --- scenarios -----------------------------------------------------------------------------------


def deliver_mailservice(
    sink, count: int, content: dict | None = None, env: dict | None = None, provider: dict | None = None
) -> tuple[dict, float]:
    """`provider`: the MAIL_PROVIDERS entry to deliver through; SMTP to the sink's port if not given."""
    from emails import queue

    reset_mailservice(
        [provider or {"name": "sink", "backend": "smtp", "options": {"host": "127.0.0.1", "port": sink.port}}]
    )
    ids = accepted_emails(count, content=content)
    [worker] = start_workers(env=env)
    queue.publish(ids)
    wait_for(lambda: sent_count() == count, 600, "every email SENT", interval=0.2)
    memory = rss_mb(worker)
    stop(worker)
    return verify(sink.arrivals(), set(ids)), memory


def deliver_postoffice(sink, count: int) -> dict:
    """django-post_office delivering to `sink`: over SMTP, or through anymail's Postmark backend to a FakeEsp."""
    reset_postoffice()
    env = {"SINK_PORT": str(sink.port), "DJANGO_SETTINGS_MODULE": "bench.postoffice_settings"}
    if isinstance(sink, FakeEsp):
        env["BENCH_POSTMARK_URL"] = sink.url
    subprocess.run([PYTHON, "-m", "bench.postoffice_enqueue", str(count), "many"], cwd=ROOT, check=True,
                   env={**os.environ, **env}, capture_output=True)  # fmt: skip
    subprocess.run([PYTHON, "-m", "django", "send_queued_mail", "--processes", "2"], cwd=ROOT, check=True,
                   env={**os.environ, **env}, capture_output=True)  # fmt: skip
    return verify(sink.arrivals(), {f"po-{n}" for n in range(count)})


def postoffice_enqueue(count: int, mode: str) -> float:
    reset_postoffice()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.postoffice_settings"}
    done = subprocess.run([PYTHON, "-m", "bench.postoffice_enqueue", str(count), mode], cwd=ROOT, check=True,
                          env=env, capture_output=True, text=True)  # fmt: skip
    return count / json.loads(done.stdout)["seconds"]


def send_ceiling(kind: str, sink, count: int, threads: int, processes: int = WORKER_CONCURRENCY) -> dict:
    """bench/send_ceiling.py: sending alone (KIND smtplib, postmark, smtp or bytes) to `sink`, in as many processes
    as a worker has, `threads` sends at once in each."""
    target = sink.url if isinstance(sink, FakeEsp) else str(sink.port)
    subprocess.run([PYTHON, "-m", "bench.send_ceiling", kind, target, str(count), str(processes), str(threads)],
                   cwd=ROOT, check=True)  # fmt: skip
    result = verify(sink.arrivals(), {f"ceiling-{n}" for n in range(count)})
    if isinstance(sink, SmtpSink):
        sink.close()
    return result


def load(url: str, key: str, *args) -> dict:
    """One run of the load generator (bench/load.py), in a process of its own."""
    done = subprocess.run([PYTHON, "-m", "bench.load", url, key, *map(str, args)], cwd=ROOT, check=True,
                          capture_output=True, text=True)  # fmt: skip
    return json.loads(done.stdout)


def median_of_3(figure: str, url: str, key: str, *args) -> dict:
    # This VM's speed wanders from second to second: the middle of three runs, with all three kept.
    runs = sorted((load(url, key, *args) for _ in range(3)), key=lambda run: run[figure])
    return {**runs[1], "runs": [run[figure] for run in runs]}


def http_ingest(key: str, url: str) -> dict:
    load(url, key, "single", 16, 3)  # every web process warmed up (imports, connections)
    return {
        "single": load(url, key, "single", 16, 10),
        "rate_200": median_of_3("p99_ms", url, key, "rate", 200, 10),
        "batch": median_of_3("emails_per_second", url, key, "batch", 4, 40, 500),
    }


def reference_floor() -> dict:
    """p99 at 200 requests/s of bench/reference_app.py: gunicorn as ours, a fixed 1.5 ms of Python per
    request (about what our request thread spends) and no I/O: the floor this machine sets for a Python
    web service of that cost (median of three)."""
    port = free_port()
    # Its own module as the config (it sets nothing): not the project's gunicorn.conf.py, which loads Django.
    web = start([str(BIN / "gunicorn"), "bench.reference_app", "-c", "python:bench.reference_app", "--bind", f"127.0.0.1:{port}",
                 "--worker-class", "gthread", "--workers", str(os.cpu_count() or 1), "--threads", "8"],
                log="reference")  # fmt: skip
    wait_for(lambda: _accepts(port), 30, "the reference app")
    url = f"http://127.0.0.1:{port}"
    load(url, "-", "single", 16, 3)
    result = median_of_3("p99_ms", url, "-", "rate", 200, 10)
    stop(web)
    return result


def end_to_end(url: str, key: str, sink, count: int) -> dict:
    from emails.models import Email

    workers = start_workers()
    started = time.time()
    ingest = load(url, key, "batch", 2, count // 500, 500)
    wait_for(lambda: sent_count() == count, 600, "every email SENT", interval=0.2)
    arrivals = sink.arrivals()
    for worker in workers:
        stop(worker)
    result = verify(arrivals, {str(i) for i in Email.objects.values_list("id", flat=True)})
    result["per_second"] = count / (max(t for _, t in arrivals) - started)  # from the first request
    result["ingest"] = ingest
    return result


def postoffice_end_to_end(count: int) -> dict:
    """Row 5's peer: django-post_office in its Celery mode. Two processes enqueue with send_many(), batches of 500
    (as row 5's two connections post batches of 500), while a Celery worker with its defaults (prefork, 2
    processes) runs the send_queued_mail task each batch queues; from the first enqueue to the last arrival at
    the same kind of sink."""
    import psycopg2
    import redis

    reset_postoffice()
    redis.Redis.from_url(PO_BROKER_URL).flushdb()
    sink = SmtpSink("postoffice-e2e")
    env = {"SINK_PORT": str(sink.port), "DJANGO_SETTINGS_MODULE": "bench.postoffice_settings",
           "BENCH_PO_CELERY_BROKER": PO_BROKER_URL}  # fmt: skip
    log = f"postoffice-worker-{time.monotonic_ns()}"
    worker = start([str(BIN / "celery"), "-A", "bench.postoffice_celery", "worker", "--concurrency", "2",
                    "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
                    "--hostname", f"{log}@%h"], env=env, log=log)  # fmt: skip
    wait_for(lambda: log_has(log, " ready."), 60, "the peer's worker to be ready")
    started = time.time()
    half = count // 2
    enqueuers = [subprocess.Popen([PYTHON, "-m", "bench.postoffice_enqueue", str(n), "many", str(first)], cwd=ROOT,
                                  env={**os.environ, **env}, stdout=subprocess.DEVNULL)
                 for first, n in ((0, half), (half, count - half))]  # fmt: skip
    for enqueuer in enqueuers:
        assert enqueuer.wait() == 0, "the peer's enqueue failed"
    conn = psycopg2.connect(dbname=PO_DB, user="postgres", host="127.0.0.1")
    conn.autocommit = True

    def unfinished() -> int:  # post_office's statuses: 0 sent, 1 failed, 2 queued, 3 requeued
        with conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM post_office_email WHERE status IS NULL OR status >= 2")
            return cursor.fetchone()[0]

    wait_for(lambda: unfinished() == 0, 600, "the peer to send every email", interval=0.2)
    conn.close()
    stop(worker)
    arrivals = sink.arrivals()
    sink.close()
    result = verify(arrivals, {f"po-{n}" for n in range(count)})
    result["per_second"] = count / (max(t for _, t in arrivals) - started) if arrivals else 0.0
    return result


def rate_limit_accuracy(rate: int, burst: int, count: int) -> dict:
    from emails import queue

    sink = LatencySink("ratelimit", 0)
    provider = {"name": "limited", "backend": "smtp", "options": {"host": "127.0.0.1", "port": sink.port},
                "rate_limit": rate, "burst": burst}  # fmt: skip
    reset_mailservice([provider])
    ids = accepted_emails(count)
    workers = start_workers(3, concurrency=1, name="ratelimited")
    queue.publish(ids)
    wait_for(lambda: sent_count() == count, 120, "every email SENT", interval=0.2)
    for worker in workers:
        stop(worker)
    arrivals = sink.arrivals()
    times = sorted(t for _, t in arrivals)
    import bisect

    peak = max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))
    return {**verify(arrivals, set(ids)), "busiest_second": peak, "limit": rate, "burst": burst}


def postmark_ingest(url: str, key: str) -> dict:
    """Row 8: Postmark batches of 500 to POST /email/batch at row 4's load (4 connections, 40 requests); the
    middle of three runs, each run's rows counted."""
    load(url, key, "postmark", 4, 4, 500)  # the door's code imported and warm in every web process
    runs = []
    for _ in range(3):
        clear_emails()
        run = load(url, key, "postmark", 4, 40, 500)
        runs.append({**run, "rows": email_rows(), "accepted": (run["requests"] - run["failures"]) * 500})
    runs.sort(key=lambda run: run["emails_per_second"])
    return {**runs[1], "runs": [run["emails_per_second"] for run in runs], "rows": sum(run["rows"] for run in runs),
            "accepted": sum(run["accepted"] for run in runs), "failures": sum(run["failures"] for run in runs)}  # fmt: skip


def smtp_load(port: int, key: str, seconds: float) -> dict:
    """One run of bench/smtp_load.py's SMTP_CLIENTS clients, in processes of their own."""
    done = subprocess.run([PYTHON, "-m", "bench.smtp_load", "send", str(port), key, str(SMTP_CLIENTS), str(seconds)],
                          cwd=ROOT, check=True, capture_output=True, text=True)  # fmt: skip
    return json.loads(done.stdout)


def smtp_ingest(key: str) -> dict:
    """Row 9: `manage.py smtpd` and a bare aiosmtpd server (bench/smtp_load.py) under the same 8 clients, runs
    alternated (this VM's speed wanders), the middle of three each. Every 250 from smtpd must be a row; every
    250 from the bare server a message it received."""
    from emails.models import Email

    port = free_port()
    smtpd = start([PYTHON, "manage.py", "smtpd"], env={"MAIL_SMTP_LISTEN": f"127.0.0.1:{port}"}, log="smtpd", cwd=CODE)
    wait_for(lambda: log_has("smtpd", "Listening for SMTP"), 60, "manage.py smtpd")
    bare_port = free_port()
    bare = start([PYTHON, "-m", "bench.smtp_load", "sink", str(bare_port)], log="smtp-bare")
    wait_for(lambda: _accepts(bare_port), 10, "the bare aiosmtpd server")
    warm = [smtp_load(port, key, 1), smtp_load(bare_port, key, 1)]  # imports, the door's database connections
    ours, ceiling = [], []
    for _ in range(3):
        clear_emails()
        run = smtp_load(port, key, SMTP_SECONDS)
        ids = set(run.pop("ids"))
        rows = Email.objects.filter(id__in=ids).count()
        ours.append({**run, "rows": rows, "lost": run["accepted"] - rows, "unnamed": run["accepted"] - len(ids),
                     "extra": email_rows() - rows})  # fmt: skip
        run = smtp_load(bare_port, key, SMTP_SECONDS)
        del run["ids"]
        ceiling.append(run)
    stop(smtpd)
    stop(bare)
    received = json.loads(next(line for line in (SCRATCH / "smtp-bare.log").read_text().splitlines()
                               if line.startswith('{"received"')))["received"]  # fmt: skip

    def middle(runs: list[dict]) -> dict:
        ordered = sorted(runs, key=lambda run: run["messages_per_second"])
        return {**ordered[1], "runs": [run["messages_per_second"] for run in ordered], "all": runs}

    replies = sum((Counter(run["replies"]) for run in ours), Counter())
    return {
        "smtpd": {**middle(ours), **{n: sum(run[n] for run in ours) for n in ("accepted", "rows", "lost", "unnamed", "extra")},
                  "replies": dict(replies)},
        "bare": {**middle(ceiling), "accepted": sum(run["accepted"] for run in ceiling + warm[1:]), "received": received},
    }  # fmt: skip


def stream_load(key: str, count: int) -> dict:
    """One run of bench/stream_load.py, in a process of its own."""
    done = subprocess.run([PYTHON, "-m", "bench.stream_load", REDIS_URL, STREAM, key, str(count)], cwd=ROOT,
                          check=True, capture_output=True, text=True)  # fmt: skip
    return json.loads(done.stdout)


def stream_ingest(key: str, consumers: int, count: int) -> dict:
    """Row 10: `count` entries to STREAM read by `consumers` consume_stream processes, the middle of three runs.
    Each run checks one result per entry, each email a row (and no other row) and nothing left pending."""
    from emails.models import Email
    from emails.stream_door import GROUP
    from infra.redis import get_redis

    clear_emails()  # the stream and its group too: the consumers make them
    processes = []
    for n in range(consumers):
        log = f"stream-{consumers}-{n}-{time.monotonic_ns()}"
        processes.append(start([PYTHON, "manage.py", "consume_stream"], env={"MAIL_STREAM": STREAM}, log=log,
                               cwd=CODE))  # fmt: skip
        wait_for(lambda log=log: log_has(log, "Consuming"), 60, "manage.py consume_stream")
    stream_load(key, 2000)  # imports, connections, the API key remembered
    runs = []
    for _ in range(3):
        clear_rows()
        run = stream_load(key, count)
        ids = run.pop("email_ids")
        rows = Email.objects.filter(id__in=ids).count()
        pending = get_redis().xpending(STREAM, GROUP)["pending"]
        runs.append({**run, "rows": rows, "distinct_emails": len(set(ids)), "extra": email_rows() - rows,
                     "pending": pending})  # fmt: skip
    for process in processes:
        stop(process)
    runs.sort(key=lambda run: run["entries_per_second"])
    totals = ("entries", "answered", "duplicate_results", "errors", "rows", "distinct_emails", "extra", "pending")
    return {**runs[1], "runs": [run["entries_per_second"] for run in runs], "consumers": consumers,
            **{name: sum(run[name] for run in runs) for name in totals}}  # fmt: skip


class WebhookReceiver:
    """bench/webhook_receiver.py: 204 at once to every POST; the webhook-id and arrival time of each."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.out = SCRATCH / "webhooks.txt"
        self.process = start([PYTHON, "-m", "bench.webhook_receiver", str(self.port), str(self.out)], log="receiver")
        wait_for(lambda: _accepts(self.port), 10, "the webhook receiver")

    def arrivals(self) -> list[tuple[str, float]]:
        stop(self.process)
        return [(i, float(t)) for i, t in (line.split() for line in self.out.read_text().splitlines())]


def deliver_with_webhook(sink, count: int) -> dict:
    """Row 11: row 1's delivery, each email's key with one webhook (every event) to a local receiver. Emails are
    counted at the sink, webhook messages (email.sent, one per email) by webhook-id at the receiver."""
    from django.conf import settings

    from emails import queue
    from emails.models import WebhookMessage
    from emails.services import api_key_create
    from emails.services.webhooks import webhook_create

    reset_mailservice([{"name": "sink", "backend": "smtp", "options": {"host": "127.0.0.1", "port": sink.port}}])
    receiver = WebhookReceiver()
    api_key, _ = api_key_create(name="bench-webhooks")
    webhook_create(api_key=api_key, url=receiver.url)
    ids = accepted_emails(count, api_key_id=api_key.id)
    [worker] = start_workers()
    # Deliveries routed to a queue of their own are a worker's of their own, as the Procfile's `webhooks`.
    queue_name = getattr(settings, "CELERY_TASK_ROUTES", {}).get("emails.tasks.deliver_webhooks", {}).get("queue")
    webhook_workers = start_workers(concurrency=1, name="webhooks", queues=queue_name) if queue_name else []
    started = time.time()
    queue.publish(ids)
    wait_for(lambda: sent_count() == count, 600, "every email SENT", interval=0.2)
    delivered = WebhookMessage.objects.filter(status=WebhookMessage.Status.DELIVERED)
    wait_for(lambda: delivered.count() >= count, 600, "every webhook message delivered", interval=0.2)
    for process in [worker, *webhook_workers]:
        stop(process)
    emails = verify(sink.arrivals(), set(ids))
    messages = {"msg_" + m.hex for m in WebhookMessage.objects.values_list("id", flat=True)}
    hooks = receiver.arrivals()
    webhooks = {**verify(hooks, messages), "messages": len(messages),
                "statuses": dict(Counter(WebhookMessage.objects.values_list("status", flat=True)))}  # fmt: skip
    # From the publish to the last webhook: what a client waiting for every email.sent sees.
    webhooks["all_per_second"] = count / (max(t for _, t in hooks) - started) if hooks else 0.0
    return {"emails": emails, "webhooks": webhooks}


def sealed_rows() -> int:
    """Email rows whose subject is stored encrypted (with the bodies in `content`, or on its own), read in SQL
    (the model would decrypt it)."""
    from django.db import connection

    from infra.encryption import MARK

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM emails_email WHERE content #>> '{}' LIKE %s OR subject LIKE %s",
            [MARK + "%", MARK + "%"],
        )
        return cursor.fetchone()[0]


def median_run(runs: list[dict], figure: str) -> dict:
    """The middle of an odd number of runs by `figure`, with their figures (ordered) and the runs in the order
    run."""
    ordered = sorted(runs, key=lambda run: run[figure])
    return {**ordered[len(ordered) // 2], "runs": [run[figure] for run in ordered], "all": runs}


def encryption_on_off(count: int) -> dict:
    """Row 12: row 1's delivery and row 4's batch ingest of RICH_EMAIL with encryption at rest on (a key made for
    this run) and off, alternated off, on, off, on...: this VM's speed wanders, so each mode's median is measured
    beside the other's. Delivery runs three rounds; batch ingest, whose runs are short and wander more, five
    rounds of 40,000 emails. Each delivery run is counted at the sink; each run's rows are counted, and must all
    be stored encrypted when on, none when off."""
    from cryptography.fernet import Fernet
    from django.conf import settings

    from bench.load import RICH_EMAIL
    from emails.services import api_key_create

    keys = {"off": [], "on": [Fernet.generate_key().decode()]}
    # Set and empty, the variable is off for a process, whatever key `make run` left in var/.
    envs = {mode: {"MAIL_ENCRYPTION_KEYS": ",".join(mode_keys)} for mode, mode_keys in keys.items()}
    content = {name: RICH_EMAIL[name] for name in ("subject", "text", "html", "metadata")}
    own_keys = settings.MAIL_ENCRYPTION_KEYS
    delivery: dict[str, list] = {"off": [], "on": []}
    ingest: dict[str, list] = {"off": [], "on": []}
    try:
        for round_ in range(3):
            for mode in keys:
                # The accepted rows are written by this process: sealed, as the API seals them, when on.
                settings.MAIL_ENCRYPTION_KEYS = keys[mode]
                sink = SmtpSink(f"encryption-{mode}-{round_}")
                run, _ = deliver_mailservice(sink, count, content, envs[mode])
                sink.close()
                delivery[mode].append({**run, "rows": email_rows(), "sealed": sealed_rows()})
        settings.MAIL_ENCRYPTION_KEYS = own_keys
        webs = {mode: start_web(envs[mode], log=f"web-encryption-{mode}") for mode in keys}
        _, api_key = api_key_create(name="bench-encryption")
        for _, url in webs.values():
            load(url, api_key, "single", 16, 3)  # every web process warmed up (imports, connections)
        for _ in range(5):
            for mode, (_, url) in webs.items():
                clear_emails()
                run = load(url, api_key, "batch", 4, 80, 500, "rich")
                ingest[mode].append({**run, "rows": email_rows(), "sealed": sealed_rows(),
                                     "accepted": (run["requests"] - run["failures"]) * 500})  # fmt: skip
        for web, _ in webs.values():
            stop(web)
    finally:
        settings.MAIL_ENCRYPTION_KEYS = own_keys

    def summary(runs: list[dict], figure: str, totals: tuple[str, ...]) -> dict:
        return {**median_run(runs, figure), **{name: sum(run[name] for run in runs) for name in totals}}

    return {
        "delivery": {mode: summary(runs, "per_second", ("lost", "duplicates", "rows", "sealed"))
                     for mode, runs in delivery.items()},
        "ingest": {mode: summary(runs, "emails_per_second", ("failures", "accepted", "rows", "sealed"))
                   for mode, runs in ingest.items()},
        "email_bytes": {name: len(RICH_EMAIL[name]) for name in ("subject", "text", "html")},
    }  # fmt: skip


def deliver_two_groups(sink, count: int, env: dict | None = None, watch=None) -> dict:
    """`count` accepted emails delivered by two worker groups (two `celery worker` processes, each as row 1's), as
    the workers of two hosts sharing one database would. `watch`: called at each poll while they deliver."""
    from emails import queue

    reset_mailservice([{"name": "sink", "backend": "smtp", "options": {"host": "127.0.0.1", "port": sink.port}}])
    ids = accepted_emails(count)
    workers = start_workers(2, name="group", env=env)
    queue.publish(ids)

    def all_sent() -> bool:
        if watch is not None:
            watch()
        return sent_count() == count

    wait_for(all_sent, 600, "every email SENT", interval=0.2)
    for worker in workers:
        stop(worker)
    return verify(sink.arrivals(), set(ids))


def start_pgbouncer() -> tuple[subprocess.Popen, int]:
    """Row 14's PgBouncer in front of the bench's database, its files under SCRATCH; stopped with the bench's other
    processes. Returns it and its port."""
    from django.conf import settings

    from bench import pgbouncer

    # It runs as the `postgres` OS user when the bench runs as root: that user must pass through SCRATCH (to its
    # own directory only; the rest of SCRATCH stays unreadable to it).
    SCRATCH.chmod(0o711)
    port = free_port()
    command = pgbouncer.command(SCRATCH / "pgbouncer", port=port, database=DB, pool_size=PGBOUNCER_POOL_SIZE,
                                statement_timeout_ms=round(settings.MAIL_DATABASE_TIMEOUT * 1000))  # fmt: skip
    process = start(command, log="pgbouncer")

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited: {(SCRATCH / 'pgbouncer.log').read_text(errors='replace')}")
        return pgbouncer.answers(port)

    wait_for(answers, 10, "pgbouncer")
    return process, port


def pgbouncer_against_direct(count: int) -> dict:
    """Row 14: delivery by two worker groups through PgBouncer (transaction pooling) and connected to PostgreSQL
    directly, alternated direct, PgBouncer three times: this VM's speed wanders, so each median is measured beside
    the other's. Every run is counted at the sink. PgBouncer's pool is read while the emails are delivered: the
    most client connections it held and the most server connections it opened for them, to show they were pooled."""
    from bench import pgbouncer

    process, port = start_pgbouncer()
    url = f"postgres://{pgbouncer.USER}@127.0.0.1:{port}/{DB}"
    envs = {"direct": {}, "pgbouncer": {"DATABASE_URL": url, "DATABASE_POOLING": "transaction"}}
    runs: dict[str, list] = {mode: [] for mode in envs}
    peak = {"clients": 0, "servers": 0}

    def watch_pool() -> None:
        for pool in pgbouncer.show(port, "POOLS"):
            if pool["database"] == DB:
                clients = pool["cl_active"] + pool["cl_waiting"]
                servers = sum(pool[state] for state in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"))
                peak["clients"], peak["servers"] = max(peak["clients"], clients), max(peak["servers"], servers)

    def transactions() -> int:
        return sum(int(row["total_xact_count"]) for row in pgbouncer.show(port, "STATS") if row["database"] == DB)

    for round_ in range(3):
        for mode, env in envs.items():
            sink = SmtpSink(f"pgbouncer-{mode}-{round_}")
            pooled_before = transactions()
            run = deliver_two_groups(sink, count, env, watch_pool if mode == "pgbouncer" else None)
            sink.close()
            runs[mode].append({**run, "pooled_transactions": transactions() - pooled_before})
    stop(process)

    def summary(mode_runs: list[dict]) -> dict:
        totals = ("lost", "duplicates", "pooled_transactions")
        return {**median_run(mode_runs, "per_second"), **{name: sum(run[name] for run in mode_runs) for name in totals}}

    return {
        **{mode: summary(mode_runs) for mode, mode_runs in runs.items()},
        "pool_size": PGBOUNCER_POOL_SIZE,
        "peak_client_connections": peak["clients"],
        "peak_server_connections": peak["servers"],
    }


# --- the run -------------------------------------------------------------------------------------

_web: dict[str, str] = {}


def start_web(env: dict | None = None, log: str = "web") -> tuple[subprocess.Popen, str]:
    """gunicorn serving the measured code, as its gunicorn.conf.py says; returns it and its URL."""
    port = free_port()
    web = start([str(BIN / "gunicorn"), "mailservice.wsgi", "--bind", f"127.0.0.1:{port}"], env=env, log=log, cwd=CODE)
    wait_for(lambda: _accepts(port), 30, "gunicorn")
    return web, f"http://127.0.0.1:{port}"


def web_url() -> str:
    """start_web()'s URL; started once, by the first row needing it."""
    if "url" not in _web:
        _, _web["url"] = start_web()
    return _web["url"]


def code_version() -> str:
    done = subprocess.run(["git", "-C", str(CODE), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return f"{done.stdout.strip() or '?'} ({CODE})"


def main() -> None:
    began = time.time()
    results: dict = {"cores": os.cpu_count(), "worker_concurrency": WORKER_CONCURRENCY, "emails": DELIVERY_COUNT,
                     "send_threads": os.environ.get("MAIL_SEND_THREADS", "default"), "code": code_version(), "load_average": os.getloadavg(),
                     "encryption_at_rest": bool(os.environ["MAIL_ENCRYPTION_KEYS"])}  # fmt: skip
    setup_databases()
    import emails

    assert Path(emails.__file__).resolve().is_relative_to(CODE), f"{emails.__file__} is not BENCH_CODE's"
    n = DELIVERY_COUNT

    if "delivery" in ONLY:
        print(f"1. delivery of {n} accepted emails, 0 ms sink", flush=True)
        sink = SmtpSink("ours-0ms")
        results["delivery_0ms"], results["worker_rss_mb"] = deliver_mailservice(sink, n)
        sink.close()
        sink = SmtpSink("postoffice-0ms")
        results["postoffice_0ms"] = deliver_postoffice(sink, n)
        sink.close()
        results["smtplib_ceiling"] = send_ceiling("smtplib", SmtpSink("ceiling"), n, threads=1, processes=2)

    if "delivery20" in ONLY:
        print(f"2. delivery of {n} accepted emails, 20 ms sink", flush=True)
        results["delivery_20ms"], _ = deliver_mailservice(LatencySink("ours-20ms", 0.02), n)
        results["postoffice_20ms"] = deliver_postoffice(LatencySink("postoffice-20ms", 0.02), n)

    if "http" in ONLY:
        print(f"13. delivery of {n} accepted emails through a fake HTTP ESP (anymail Postmark), 20 ms", flush=True)
        esp = FakeEsp("ours-http", 0.02)
        results["http_20ms"], _ = deliver_mailservice(esp, n, provider=esp.provider())
        results["postoffice_http_20ms"] = deliver_postoffice(FakeEsp("postoffice-http", 0.02), n)
        from django.conf import settings

        # As many sends at once as a worker process may keep in flight (its ceiling, which HTTP sends reach).
        threads = settings.MAIL_SEND_THREADS
        results["anymail_ceiling"] = send_ceiling("postmark", FakeEsp("ceiling-http", 0.02), n, threads)

    if "ingest" in ONLY:
        ingest_and_end_to_end(results, n)
    if "postmark" in ONLY or "smtp" in ONLY:
        from emails.services import api_key_create

        _, key = api_key_create(name="bench-doors")
    if "postmark" in ONLY:
        print("8. Postmark batch ingest", flush=True)
        results["postmark"] = postmark_ingest(web_url(), key)
    if "smtp" in ONLY:
        print(f"9. SMTP ingest, {SMTP_CLIENTS} clients, against a bare aiosmtpd server", flush=True)
        results["smtp"] = smtp_ingest(key)
    if "stream" in ONLY:
        from emails.services import api_key_create

        _, key = api_key_create(name="bench-stream")
        print(f"10. stream ingest, {STREAM_COUNT} entries, one and two consumers", flush=True)
        results["stream"] = {str(n): stream_ingest(key, n, STREAM_COUNT) for n in (1, 2)}
    if "webhooks" in ONLY:
        print(f"11. delivery of {n} accepted emails, 0 ms sink, a webhook on their key", flush=True)
        if "delivery_0ms" not in results:  # row 1, the same delivery without a webhook, measured in this run
            sink = SmtpSink("ours-0ms")
            results["delivery_0ms"], results["worker_rss_mb"] = deliver_mailservice(sink, n)
            sink.close()
        sink = SmtpSink("webhooks-0ms")
        results["webhooks"] = deliver_with_webhook(sink, n)
        sink.close()
    if "encryption" in ONLY:
        print(f"12. delivery of {n} accepted emails and batch ingest, encryption on / off, alternated", flush=True)
        results["encryption"] = encryption_on_off(n)
    if "pgbouncer" in ONLY:
        print(f"14. delivery of {n} accepted emails, 0 ms sink, 2 worker groups, via PgBouncer / direct", flush=True)
        results["pgbouncer"] = pgbouncer_against_direct(n)
    if "ratelimit" in ONLY:
        print("6. rate limit accuracy", flush=True)
        results["rate_limit"] = rate_limit_accuracy(200, 10, 2000)
    results["seconds"] = time.time() - began
    report(results)


def ingest_and_end_to_end(results: dict, n: int) -> None:
    print("3-5. HTTP ingest and end to end", flush=True)
    sink = SmtpSink("e2e")
    reset_mailservice([{"name": "sink", "backend": "smtp", "options": {"host": "127.0.0.1", "port": sink.port}}])
    from emails.services import api_key_create

    _, key = api_key_create(name="bench")
    url = web_url()
    results["ingest"] = http_ingest(key, url)
    results["reference_rate_200"] = reference_floor()
    results["postoffice_enqueue_one"] = postoffice_enqueue(2000, "one")
    results["postoffice_enqueue_many"] = postoffice_enqueue(10000, "many")
    reset_mailservice([{"name": "sink", "backend": "smtp", "options": {"host": "127.0.0.1", "port": sink.port}}])
    _, key = api_key_create(name="bench")
    results["end_to_end"] = end_to_end(url, key, sink, n)
    sink.close()
    results["postoffice_end_to_end"] = postoffice_end_to_end(n)
    # Sends at once as ours at a 0 ms sink (providers.concurrency's floor).
    results["smtp_send_ceiling"] = send_ceiling("smtp", SmtpSink("ceiling-smtp"), n, 8)
    results["smtp_transaction_ceiling"] = send_ceiling("bytes", SmtpSink("ceiling-bytes"), n, 8)


def _runs(figure: dict) -> str:
    return " / ".join(f"{run:.0f}" for run in figure["runs"])


def report(r: dict) -> None:
    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "-"

    rows = []
    if "delivery_0ms" in r and "postoffice_0ms" not in r:  # measured for row 11 only, without its peers
        rows.append(("1. delivery, 0 ms sink (emails/s)", r["delivery_0ms"]["per_second"], "-", "for row 11; no peers run"))  # fmt: skip
    if "postoffice_0ms" in r:
        ours0, po0, ceil = r["delivery_0ms"], r["postoffice_0ms"], r["smtplib_ceiling"]
        rows += [
            ("1. delivery, 0 ms sink (emails/s)", ours0["per_second"], po0["per_second"], ratio(ours0["per_second"], po0["per_second"])),
            ("   vs smtplib ceiling (emails/s)", ours0["per_second"], ceil["per_second"], ratio(ours0["per_second"], ceil["per_second"])),
        ]  # fmt: skip
    if "delivery_20ms" in r:
        ours20, po20 = r["delivery_20ms"], r["postoffice_20ms"]
        rows.append(("2. delivery, 20 ms sink (emails/s)", ours20["per_second"], po20["per_second"], ratio(ours20["per_second"], po20["per_second"])))  # fmt: skip
    if "ingest" in r:
        ingest, e2e = r["ingest"], r["end_to_end"]
        rows += [
            ("3. single ingest, 16 conc. (req/s)", ingest["single"]["requests_per_second"], r["postoffice_enqueue_one"], "(peer: mail.send, no HTTP)"),
            ("   p50 / p99 at 16 conc. (ms)", f'{ingest["single"]["p50_ms"]:.1f} / {ingest["single"]["p99_ms"]:.1f}', "-", ""),
            ("   p99 at 200 req/s (ms)", ingest["rate_200"]["p99_ms"], r["reference_rate_200"]["p99_ms"], "target < 25; median of " + _runs(ingest["rate_200"]) + "; peer: the floor, " + _runs(r["reference_rate_200"])),
            ("4. batch ingest, 500/req (emails/s)", ingest["batch"]["emails_per_second"], r["postoffice_enqueue_many"], "median of " + _runs(ingest["batch"]) + "; peer: send_many, no HTTP"),
            ("5. end to end, HTTP batches (emails/s)", e2e["per_second"], r["postoffice_end_to_end"]["per_second"], ratio(e2e["per_second"], r["postoffice_end_to_end"]["per_second"]) + "; peer: its Celery mode, send_many, no HTTP; target >= 4x"),
        ]  # fmt: skip
        if "smtp_send_ceiling" in r:
            # Ingest and delivery share the cores: end to end reaches at most 1 / (1/ingest + 1/delivery), each
            # measured alone on the whole machine. Here with delivery as cheap as sending alone: no queue,
            # database or encryption.
            target = 4 * r["postoffice_end_to_end"]["per_second"]
            for name, figure, what in (
                (
                    "our SMTP sending alone",
                    "smtp_send_ceiling",
                    "each message built by Django, sent by providers/smtp.py",
                ),
                (
                    "the SMTP transaction alone",
                    "smtp_transaction_ceiling",
                    "smtplib.sendmail() of ready bytes, no message built",
                ),
            ):
                alone = r[figure]["per_second"]
                bound = 1 / (1 / ingest["batch"]["emails_per_second"] + 1 / alone)
                rows += [
                    (f"   {name}, 0 ms (emails/s)", alone, "-", f"{what}; no queue or database"),
                    ("   end to end at most, row 4 + that (emails/s)", bound, target, ratio(bound, target) + "; peer: 4x row 5's peer, the target"),
                ]  # fmt: skip
    if "rate_limit" in r:
        rl = r["rate_limit"]
        rows.append(("6. rate limit 200/s + burst 10 (peak/s)", rl["busiest_second"], rl["limit"] + rl["burst"], "peak <= limit + burst"))  # fmt: skip
    if "worker_rss_mb" in r:
        rows.append(("7. worker memory after 1 (PSS, MB)", r["worker_rss_mb"], "-", f'{r["worker_concurrency"]} processes x {r["send_threads"]} send threads'))  # fmt: skip
    if "postmark" in r:
        pm = r["postmark"]
        refused = f"; REFUSED: {pm['failures']} requests ({pm['statuses']})" if pm["failures"] else ""
        rows.append(("8. Postmark batch, 500/req (emails/s)", pm["emails_per_second"], "-", "median of " + _runs(pm) + "; row 4's load" + refused))  # fmt: skip
    if "smtp" in r:
        ours, bare = r["smtp"]["smtpd"], r["smtp"]["bare"]
        rows.append((f"9. SMTP ingest, {ours['clients']} smtplib clients (msg/s)", ours["messages_per_second"], bare["messages_per_second"], ratio(ours["messages_per_second"], bare["messages_per_second"]) + "; median of " + _runs(ours) + "; peer: bare aiosmtpd, " + _runs(bare)))  # fmt: skip
    if "stream" in r:
        for consumers, st in r["stream"].items():
            rows.append((f"10. stream ingest, {consumers} consumer{'s' if consumers != '1' else ''} (entries/s)", st["entries_per_second"], "-", "target >= 5000; median of " + _runs(st)))  # fmt: skip
    if "webhooks" in r:
        wh, plain = r["webhooks"], r["delivery_0ms"]
        rows += [
            ("11. delivery + webhook, 0 ms (emails/s)", wh["emails"]["per_second"], plain["per_second"], ratio(wh["emails"]["per_second"], plain["per_second"]) + "; peer: row 1, no webhook"),
            ("    its webhooks (deliveries/s)", wh["webhooks"]["per_second"], "-", f'all {wh["webhooks"]["messages"]} done at {wh["webhooks"]["all_per_second"]:.0f}/s from the publish'),
        ]  # fmt: skip
    if "encryption" in r:
        enc = r["encryption"]
        for name, part, figure in (
            ("12. delivery, 0 ms sink, encryption on / off (emails/s)", "delivery", "per_second"),
            ("12b. batch ingest, encryption on / off (emails/s)", "ingest", "emails_per_second"),
        ):
            on, off = enc[part]["on"], enc[part]["off"]
            rows.append((name, on[figure], off[figure], ratio(on[figure], off[figure]) + f"; target >= 0.90x; peer: off; median of on {_runs(on)}, off {_runs(off)}"))  # fmt: skip
    if "http_20ms" in r:
        ours, po = r["http_20ms"], r["postoffice_http_20ms"]
        rows.append(("13. delivery, HTTP ESP 20 ms (emails/s)", ours["per_second"], po["per_second"], ratio(ours["per_second"], po["per_second"]) + "; anymail Postmark, both; target >= 4x"))  # fmt: skip
        if "anymail_ceiling" in r:
            ceiling = r["anymail_ceiling"]["per_second"]
            rows.append(("    vs anymail Postmark alone (emails/s)", ours["per_second"], ceiling, ratio(ours["per_second"], ceiling) + f"; no queue or database; the target, 4x the peer, is {4 * po['per_second']:.0f}"))  # fmt: skip
    if "pgbouncer" in r:
        pgb = r["pgbouncer"]
        via, direct = pgb["pgbouncer"], pgb["direct"]
        rows += [
            ("14. delivery, 2 worker groups, via PgBouncer / direct (emails/s)", via["per_second"], direct["per_second"], ratio(via["per_second"], direct["per_second"]) + f"; target >= 0.85x; peer: direct; median of via {_runs(via)}, direct {_runs(direct)}"),
            ("    PgBouncer: client / server connections (peak)", pgb["peak_client_connections"], pgb["peak_server_connections"], f'pool size {pgb["pool_size"]}; {via["pooled_transactions"]} transactions pooled in 3 runs'),
        ]  # fmt: skip
    encryption = "on" if r.get("encryption_at_rest") else "off"
    print(f"\nmailservice bench — {r['cores']} cores, {r['emails']} emails per delivery run, encryption at rest "
          f"{encryption}, {r['seconds']:.0f} s")  # fmt: skip
    print(f"code: {r['code']}; load average {r['load_average'][0]:.1f} before, {os.getloadavg()[0]:.1f} after\n")
    width = max([42] + [len(name) for name, *_ in rows])
    print(f"{'scenario':{width}} {'mailservice':>12} {'peer':>12}  ratio")
    for name, ours, peer, note in rows:
        fmt = lambda v: f"{v:12.1f}" if isinstance(v, float | int) else f"{v:>12}"  # noqa: E731
        print(f"{name:{width}} {fmt(ours)} {fmt(peer)}  {note}")
    checked = (
        "delivery_0ms",
        "postoffice_0ms",
        "smtplib_ceiling",
        "smtp_send_ceiling",
        "smtp_transaction_ceiling",
        "anymail_ceiling",
        "delivery_20ms",
        "postoffice_20ms",
        "http_20ms",
        "postoffice_http_20ms",
        "end_to_end",
        "postoffice_end_to_end",
        "rate_limit",
    )
    checks = {name: r[name] for name in checked if name in r}
    if "webhooks" in r:
        checks["webhook, emails"], checks["webhook, its posts"] = r["webhooks"]["emails"], r["webhooks"]["webhooks"]
    for mode, figures in r.get("encryption", {}).get("delivery", {}).items():
        checks[f"encryption {mode}, 3x"] = figures
    if "pgbouncer" in r:
        checks["via PgBouncer, 3x"], checks["direct, 2 groups, 3x"] = (
            r["pgbouncer"]["pgbouncer"],
            r["pgbouncer"]["direct"],
        )
    if checks:
        print("\ndelivery checks (lost / duplicates):")
    for name, figures in checks.items():
        print(f"  {name:18} lost {figures['lost']}, duplicates {figures['duplicates']}")
    if "postmark" in r or "smtp" in r or "stream" in r:
        print("ingest checks (rows / accepted):")
    if "postmark" in r:
        pm = r["postmark"]
        print(f"  {'postmark':18} {pm['rows']} / {pm['accepted']}, failed requests {pm['failures']}")
    if "smtp" in r:
        ours, bare = r["smtp"]["smtpd"], r["smtp"]["bare"]
        others = {code: count for code, count in ours["replies"].items() if code != "250"}
        print(
            f"  {'smtpd':18} {ours['rows']} / {ours['accepted']}, other replies {others or 'none'}, "
            f"250s naming no email {ours['unnamed']}, rows without a 250 {ours['extra']}"
        )
        print(f"  {'bare aiosmtpd':18} received {bare['received']} / {bare['accepted']}")
    for consumers, st in r.get("stream", {}).items():
        print(
            f"  {'stream, ' + consumers:18} {st['rows']} / {st['entries']} (distinct emails {st['distinct_emails']}), "
            f"answered {st['answered']}, second results {st['duplicate_results']}, errors {st['errors']}, "
            f"rows without a result {st['extra']}, left pending {st['pending']}"
        )
    if "encryption" in r:
        print("encryption checks (rows stored encrypted / rows; delivery 3 runs each, ingest 5):")
        for part in ("delivery", "ingest"):
            for mode, figures in r["encryption"][part].items():
                accepted = f", rows / accepted {figures['rows']} / {figures['accepted']}" if part == "ingest" else ""
                failed = f", failed requests {figures['failures']}" if part == "ingest" else ""
                print(f"  {part + ', ' + mode:18} {figures['sealed']} / {figures['rows']}{accepted}{failed}")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"results-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(r, indent=2))
    shutil.copy(path, OUT / "latest.json")
    print(f"\nfigures: {path}")


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
        shutil.rmtree(SCRATCH, ignore_errors=True)
