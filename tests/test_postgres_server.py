"""The PostgresServer helper itself: the fault tests that stop or freeze a database rely on it doing just that."""

from __future__ import annotations

import time

import psycopg2
import pytest

from tests.processes import PostgresServer, process_state, wait_for


def test_migrated_then_stop_refuses_and_start_keeps_the_data(own_postgres: PostgresServer):
    assert own_postgres.query("SELECT to_regclass('public.emails_email')::text") == [("emails_email",)]
    own_postgres.query("CREATE TABLE kept (n int)")
    own_postgres.query("INSERT INTO kept VALUES (%s)", (42,))

    own_postgres.stop()
    assert own_postgres.pids() == []
    assert not own_postgres.answers()
    with pytest.raises(psycopg2.OperationalError):
        own_postgres.query("SELECT 1")

    own_postgres.start()
    assert own_postgres.query("SELECT n FROM kept") == [(42,)]


def test_freeze_leaves_connections_open_but_unanswered_until_thaw(own_postgres: PostgresServer):
    connected = psycopg2.connect(own_postgres.url, connect_timeout=2)
    try:
        own_postgres.freeze()
        pids = own_postgres.pids()
        assert len(pids) > 1, "the postmaster and its children"
        assert {process_state(pid) for pid in pids} == {"T"}, "freeze() returns once every one of them is stopped"
        assert not own_postgres.answers(timeout=0.5)
        started = time.monotonic()
        with pytest.raises(psycopg2.OperationalError):
            own_postgres.query("SELECT 1")  # connect_timeout=2
        assert time.monotonic() - started < 3.5

        own_postgres.thaw()
        wait_for(own_postgres.answers, timeout=5, what="the thawed server to answer")
        assert own_postgres.query("SELECT 1") == [(1,)]
        # The connection opened before the freeze survived it.
        with connected.cursor() as cursor:
            cursor.execute("SELECT 2")
            assert cursor.fetchall() == [(2,)]
    finally:
        connected.close()
