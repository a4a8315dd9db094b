"""The embedded PostgreSQL and Redis of `make run` and `make test` (launcher/), for a machine that runs neither:
which servers get embedded, data kept between starts, a password asked, nothing doubled or left behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg2
import pytest
import redis

from launcher.__main__ import LaunchError, servers_to_embed
from launcher.embedded import EmbeddedPostgres, EmbeddedRedis, postgres_answers, redis_answers
from mailservice.settings import embedded_servers
from tests.processes import BIN, ROOT, process_state, processes_in, wait_for

URLS = {
    "DATABASE_URL": "postgres://postgres:pw@127.0.0.1:5999/mailservice",
    "REDIS_URL": "redis://:pw@127.0.0.1:6999/0",
}


@pytest.fixture
def scratch():
    # Not tmp_path: as root, PostgreSQL's OS user must enter it, and pytest keeps tmp_path in a 0700 directory.
    directory = Path(tempfile.mkdtemp(prefix="mailservice-embedded-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_mail_embedded_services_1_embeds_both_whatever_answers_at_the_default_addresses():
    assert servers_to_embed({"MAIL_EMBEDDED_SERVICES": "1"}) == (True, True)


def test_mail_embedded_services_0_embeds_neither():
    assert servers_to_embed({"MAIL_EMBEDDED_SERVICES": "0"}) == (False, False)


def test_servers_the_environment_names_are_never_embedded():
    assert servers_to_embed(URLS) == (False, False)
    assert servers_to_embed({"MAIL_EMBEDDED_SERVICES": "1", **URLS}) == (False, False)
    assert servers_to_embed({"MAIL_EMBEDDED_SERVICES": "1", "REDIS_URL": URLS["REDIS_URL"]}) == (True, False)


def test_a_bad_mail_embedded_services_is_refused_naming_it():
    with pytest.raises(LaunchError, match=r"MAIL_EMBEDDED_SERVICES must be 1 .* or 0 .*, not 'maybe'"):
        servers_to_embed({"MAIL_EMBEDDED_SERVICES": "maybe"})


def test_settings_find_the_servers_make_run_runs_and_forget_them_once_it_is_gone(tmp_path):
    state = tmp_path / "embedded.json"
    assert embedded_servers(state) == {}

    state.write_text(json.dumps({"pid": os.getpid(), **URLS}))
    assert embedded_servers(state) == URLS

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    state.write_text(json.dumps({"pid": int(gone.stdout), **URLS}))  # a launcher that was killed
    assert embedded_servers(state) == {}


def test_postgres_keeps_its_data_between_starts_and_asks_for_the_password(scratch):
    postgres = EmbeddedPostgres(scratch / "postgres", password="s3cret")
    try:
        postgres.start()
        _query(postgres.url("postgres"), "CREATE TABLE kept AS SELECT 42 AS n")
        with pytest.raises(psycopg2.OperationalError, match="password"):
            _query(postgres.url("postgres").replace(":s3cret@", "@"), "SELECT 1")
        postgres.stop()
        assert processes_in(scratch) == []

        postgres.start()
        assert _query(postgres.url("postgres"), "SELECT n FROM kept") == [(42,)]
    finally:
        postgres.stop()
    assert processes_in(scratch) == []


def test_a_postgres_left_running_by_a_killed_launcher_is_stopped_not_doubled(scratch):
    left = EmbeddedPostgres(scratch / "postgres", durable=False)
    left.start()
    _query(left.url("postgres"), "CREATE TABLE kept AS SELECT 42 AS n")
    left_pid = int((scratch / "postgres" / "postmaster.pid").read_text().split()[0])
    assert process_state(left_pid) not in (None, "Z")

    again = EmbeddedPostgres(scratch / "postgres", durable=False)
    try:
        again.start()
        assert _query(again.url("postgres"), "SELECT n FROM kept") == [(42,)]
        wait_for(lambda: process_state(left_pid) in (None, "Z"), timeout=10, what="the left postmaster to go")
        assert len([process for process in processes_in(scratch) if "postgres -D" in process]) == 1
    finally:
        again.stop()
    assert processes_in(scratch) == []


def test_postgres_runs_in_a_checkout_too_deep_for_a_unix_socket(scratch):
    deep = scratch / ("d" * 60) / ("e" * 60) / "var" / "postgres"
    deep.parent.mkdir(parents=True)
    for directory in deep.parents:
        if directory.is_relative_to(scratch):
            directory.chmod(0o755)
    postgres = EmbeddedPostgres(deep, durable=False)
    try:
        postgres.start()
        assert _query(postgres.url("postgres"), "SELECT 1") == [(1,)]
    finally:
        postgres.stop()


def test_redis_keeps_its_data_between_starts_asks_for_the_password_and_stops_a_leftover(scratch):
    left = EmbeddedRedis(scratch / "redis", password="s3cret")
    left.start()
    redis.Redis.from_url(left.url()).set("kept", "42")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=left.port).get("kept")

    again = EmbeddedRedis(scratch / "redis", password="s3cret")  # as after a launcher that was killed
    try:
        again.start()
        assert left.process.wait(timeout=30) == 0
        assert redis.Redis.from_url(again.url()).get("kept") == b"42"
    finally:
        again.stop()
    assert processes_in(scratch) == []


def test_make_test_gives_pytest_embedded_servers_and_leaves_nothing_behind():
    env = {name: value for name, value in os.environ.items() if name not in ("DATABASE_URL", "REDIS_URL")}
    env["MAIL_EMBEDDED_SERVICES"] = "1"
    result = subprocess.run(
        [str(BIN / "python"), "-m", "launcher", "test", "-q", "-p", "no:cacheprovider",
         "tests/emails/test_health.py::test_ready_answers_when_postgres_and_redis_answer"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Started PostgreSQL 18 (embedded, for this run)" in result.stdout
    assert "Started Redis 6.2" in result.stdout
    assert "1 passed" in result.stdout
    postgres_port, redis_port = (int(port) for port in re.findall(r"on 127\.0\.0\.1:(\d+)", result.stdout))
    assert not postgres_answers(postgres_port)
    assert not redis_answers(redis_port)


def _query(url: str, sql: str) -> list[tuple]:
    connection = psycopg2.connect(url, connect_timeout=5)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall() if cursor.description is not None else []
    finally:
        connection.close()
