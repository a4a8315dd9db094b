"""A bound on every query of the serving processes (gunicorn workers, Celery workers and beat).

A frozen PostgreSQL (SIGSTOPped, or a host whose kernel still ACKs) keeps its connections open and never
answers: keepalives and tcp_user_timeout never fire, and libpq would wait forever for a result. So these
processes wait through psycopg2's wait callback, which gives up after MAIL_DATABASE_TIMEOUT seconds of
silence. manage.py commands are left unbounded: migrate builds indexes for minutes, and generate_emails
uses COPY, which psycopg2 refuses while a wait callback is installed."""

from __future__ import annotations

import functools
import select

import psycopg2
from django.conf import settings
from django.db.backends.signals import connection_created
from psycopg2.extensions import (
    POLL_OK,
    POLL_READ,
    POLL_WRITE,
    STATUS_BEGIN,
    STATUS_PREPARED,
    STATUS_READY,
    set_wait_callback,
)


def bound_every_query() -> None:
    """Bounds each wait for PostgreSQL in this process (connects included) on the client, and each statement
    on the server. Call it once per process, before its first query."""
    timeout = settings.MAIL_DATABASE_TIMEOUT
    set_wait_callback(functools.partial(wait_for_answer, timeout=timeout))
    # Behind a transaction pooler a session SET would land on whichever server connection the pooler lent
    # for that one statement, and stay there for the clients it serves next (and be missing from the others).
    # There the pooler sets the timeout on each server connection it opens (README "Behind PgBouncer").
    if settings.DATABASE_POOLING != "transaction":
        connection_created.connect(_set_statement_timeout, dispatch_uid="infra.database.statement_timeout")


# A connect waits for a handful of short answers (TCP, TLS, authentication), never for a query's work: a
# second of silence there means the server is gone. After a frozen server failed a reused connection's
# health check, the reconnect then costs a request one second more, not another full timeout.
CONNECT_SILENCE_SECONDS = 1.0
_CONNECTED = (STATUS_READY, STATUS_BEGIN, STATUS_PREPARED)


def wait_for_answer(conn, *, timeout: float) -> None:
    """psycopg2.extras.wait_select with a deadline: raises OperationalError when PostgreSQL sends nothing
    for `timeout` seconds (CONNECT_SILENCE_SECONDS at most while connecting). psycopg2 then closes the
    connection (green.c, green_panic()), so Django discards it. No conn.cancel(): a cancel request opens a
    new connection, which would block on a frozen server."""
    if conn.status not in _CONNECTED:
        timeout = min(timeout, CONNECT_SILENCE_SECONDS)
    while True:
        state = conn.poll()
        if state == POLL_OK:
            return
        if state == POLL_READ:
            events = select.POLLIN
        elif state == POLL_WRITE:
            events = select.POLLOUT
        else:
            raise psycopg2.OperationalError(f"bad state from poll: {state}")
        # poll(), not select(): select() refuses descriptors above 1023, and a gthread worker holds a socket
        # per keep-alive client. A new poller each time: libpq may change sockets while it connects.
        poller = select.poll()
        poller.register(conn.fileno(), events)
        if not poller.poll(timeout * 1000):
            raise psycopg2.OperationalError(f"PostgreSQL did not answer within {timeout:g} s")


def _set_statement_timeout(sender, connection, **kwargs) -> None:
    """The server stops the work the client has given up on (a slow query, not a frozen server). A session
    setting: on a direct connection the session is this client's for the connection's life."""
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = %s", [round(settings.MAIL_DATABASE_TIMEOUT * 1000)])
