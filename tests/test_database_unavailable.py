"""PostgreSQL refusing connections, or frozen (a SIGSTOPped server, a network partition): every door answers
503 within seconds, never hangs and never shows Django's 500 page; the serving processes' waits are bounded."""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import threading
import time
import urllib.request
from unittest import mock

import psycopg2
import pytest
from celery import signals
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.db import OperationalError, connection, connections
from django.db.backends.signals import connection_created
from psycopg2.extensions import get_wait_callback, set_wait_callback

from emails.models import Email
from emails.services import api_key_create
from infra.database import bound_every_query, wait_for_answer
from tests.conftest import email_payload, make_emails
from tests.processes import wait_for
from tests.sink import free_port

SESSION_COOKIE = "sessionid=" + "0" * 32  # a staff user's browser: its session is read from the database
API_CALLS = [
    ("POST", "/api/v1/emails", email_payload()),
    ("POST", "/api/v1/emails/batch", {"emails": [email_payload()]}),
    ("GET", "/api/v1/emails", None),
    ("GET", "/api/v1/stats", None),
]


class FreezableServer:
    """A TCP proxy to PostgreSQL that can freeze as a SIGSTOPped server does: connections stay open, what clients
    send is acknowledged (by the kernel) and never answered, and new connections are accepted and held.
    With no target it is frozen from the start."""

    def __init__(self, target_port: int | None = None) -> None:
        self.target_port = target_port
        self.frozen = target_port is None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        self.frozen = True

    def thaw(self) -> None:
        """New connections reach PostgreSQL again; those opened while frozen stay unanswered."""
        self.frozen = False

    def close(self) -> None:
        for sock in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the threads blocked in accept() and recv()
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.sockets.append(client)
            if self.frozen:
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets.append(upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
                if not data or self.frozen:
                    return  # frozen: what was read is dropped, what follows waits in the kernel's buffers
                sink.sendall(data)
            except OSError:
                return


@pytest.fixture
def frozen_server():
    server = FreezableServer()
    yield server
    server.close()


@pytest.fixture
def proxy():
    server = FreezableServer(int(connection.settings_dict["PORT"] or 5432))
    yield server
    server.close()


def _database_url(port: int) -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@127.0.0.1:{port}/{db['NAME']}"


def _request(
    url: str, method: str = "GET", body: dict | list | None = None, *, key: str = "", cookie: str = "", **headers: str
):
    """(status, headers, body bytes, seconds); redirects are not followed."""
    request = urllib.request.Request(url, method=method, headers=headers)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if cookie:
        request.add_header("Cookie", cookie)
    if body is not None:
        request.add_header("Content-Type", "application/json")
        request.data = json.dumps(body).encode()
    started = time.monotonic()
    try:
        with _NO_REDIRECTS.open(request, timeout=30) as response:
            return response.status, response.headers, response.read(), time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read(), time.monotonic() - started


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_NO_REDIRECTS = urllib.request.build_opener(_NoRedirect)


def _assert_every_door_answers_503(url: str) -> dict[str, float]:
    """Each door's answer to a database outage; returns the seconds each took."""
    seconds = {}
    for method, path, body in API_CALLS:
        # Any key: with no database it cannot be checked, so it is a 503, not a 401.
        status, headers, content, seconds[f"{method} {path}"] = _request(url + path, method, body, key="any-key")
        assert (status, headers["Content-Type"]) == (503, "application/json"), (path, status, content)
        assert json.loads(content) == {"detail": "The database is unavailable; try again shortly."}
        assert int(headers["Retry-After"]) > 0
    postmark_message = {"From": "shop@example.com", "To": "alice@example.org", "Subject": "Hi", "TextBody": "Hi"}
    for path, body in (("/email", postmark_message), ("/email/batch", [postmark_message])):
        # The Postmark door answers as Postmark does when it cannot take mail: ErrorCode 100.
        token = {"X-Postmark-Server-Token": "any-key"}
        status, headers, content, seconds[f"POST {path}"] = _request(url + path, "POST", body, **token)
        assert (status, headers["Content-Type"]) == (503, "application/json"), (path, status, content)
        assert json.loads(content)["ErrorCode"] == 100
        assert int(headers["Retry-After"]) > 0
    for path in ("/admin/login/", "/dashboard/"):
        status, headers, content, seconds[f"GET {path}"] = _request(url + path, cookie=SESSION_COOKIE)
        assert (status, headers["Content-Type"]) == (503, "text/html; charset=utf-8"), (path, status, content)
        assert b"Service unavailable" in content
        assert int(headers["Retry-After"]) > 0
    status, headers, content, seconds["GET /dashboard/data"] = _request(f"{url}/dashboard/data", cookie=SESSION_COOKIE)
    assert (status, headers["Content-Type"], int(headers["Retry-After"]) > 0) == (503, "application/json", True)
    status, _, content, seconds["GET /health/ready"] = _request(f"{url}/health/ready")
    assert status == 503
    assert json.loads(content)["postgres"].startswith("unavailable: ")
    print(" ".join(f"{door}: {took:.2f}s" for door, took in seconds.items()))  # shown with -s
    assert max(seconds.values()) < 5, seconds
    return seconds


@pytest.mark.django_db(transaction=True)
def test_a_refused_database_is_a_503_at_every_door(services):
    url = services.web(DATABASE_URL=_database_url(free_port()))  # nothing listens there

    seconds = _assert_every_door_answers_503(url)

    assert max(seconds.values()) < 1


@pytest.mark.django_db(transaction=True)
def test_a_frozen_database_is_a_503_at_every_door_within_5_seconds(services, frozen_server):
    url = services.web(DATABASE_URL=_database_url(frozen_server.port))

    _assert_every_door_answers_503(url)


@pytest.mark.django_db(transaction=True)
def test_a_database_freezing_under_an_open_connection_is_a_503_within_5_seconds_then_recovers(services, proxy):
    _, key = api_key_create(name="frozen")
    # One thread: the request after the freeze meets the connection the first one opened.
    url = services.web(DATABASE_URL=_database_url(proxy.port), WEB_THREADS="1")
    assert _request(f"{url}/api/v1/emails", key=key)[0] == 200

    proxy.freeze()
    # Django's health check of the connection times out, then so does the reconnect: twice the bound.
    status, _, _, seconds = _request(f"{url}/api/v1/emails", key=key)
    print(f"frozen under an open connection: {seconds:.2f}s")
    assert status == 503
    assert seconds < 5

    proxy.thaw()
    assert _request(f"{url}/api/v1/emails", key=key)[0] == 200  # the dead connection was discarded


@pytest.mark.django_db(transaction=True)
def test_a_worker_query_on_a_frozen_database_fails_within_seconds(services, proxy):
    worker = services.worker(concurrency=1, DATABASE_URL=_database_url(proxy.port))
    first = make_emails(1)[0]
    wait_for(lambda: Email.objects.filter(id=first, status=Email.Status.SENT).exists(), timeout=60, what="SENT")

    proxy.freeze()  # the pool process keeps its connection to the frozen server
    make_emails(1)
    # Without a bound its claim would wait for an answer forever and log nothing.
    wait_for(lambda: "database unavailable (OperationalError)" in worker.log(), timeout=15, what="the claim to fail")
    proxy.thaw()


@pytest.fixture
def wait_bound():
    """Installs wait_for_answer with a bound of the test's; set_wait_callback is process-global, so it is removed
    after the test (else every later test's queries would go through it)."""
    yield lambda timeout: set_wait_callback(functools.partial(wait_for_answer, timeout=timeout))
    set_wait_callback(None)


def _connect(port: int | None = None):
    db = connection.settings_dict
    return psycopg2.connect(
        host="127.0.0.1", port=port or int(db["PORT"] or 5432), user=db["USER"], dbname=db["NAME"], connect_timeout=10
    )


@pytest.mark.django_db
def test_queries_that_answer_within_the_bound_work(wait_bound):
    wait_bound(1)
    conn = _connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(0.3), 42")
            assert cursor.fetchone()[1] == 42
            cursor.execute("SELECT generate_series(1, 100000)")  # a result of many packets
            assert len(cursor.fetchall()) == 100_000
        conn.commit()
    finally:
        conn.close()


def test_a_connect_to_a_frozen_server_fails_after_the_bound(wait_bound, frozen_server):
    wait_bound(0.5)
    started = time.monotonic()
    with pytest.raises(psycopg2.OperationalError, match=r"PostgreSQL did not answer within 0\.5 s"):
        psycopg2.connect(host="127.0.0.1", port=frozen_server.port, user="postgres", dbname="x", connect_timeout=10)
    assert 0.5 <= time.monotonic() - started < 1.5


@pytest.mark.django_db
def test_a_query_to_a_frozen_server_fails_after_the_bound_and_psycopg2_closes_the_connection(wait_bound, proxy):
    wait_bound(0.5)
    conn = _connect(proxy.port)
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1")

    proxy.freeze()
    started = time.monotonic()
    with pytest.raises(psycopg2.OperationalError, match="did not answer"), conn.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert 0.5 <= time.monotonic() - started < 1.5
    # psycopg2 closes a connection whose wait callback raised (green_panic() in psycopg/green.c): Django's
    # health check then finds it unusable and opens a new one.
    assert conn.closed
    with pytest.raises(psycopg2.InterfaceError):
        conn.cursor()


@pytest.fixture
def unbound():
    """Undoes bound_every_query() in this process after the test."""
    yield
    set_wait_callback(None)
    connection_created.disconnect(dispatch_uid="infra.database.statement_timeout")


@pytest.mark.django_db
def test_bound_every_query_bounds_waits_and_sets_the_statement_timeout(settings, unbound):
    settings.MAIL_DATABASE_TIMEOUT = 1.5
    bound_every_query()

    assert get_wait_callback().keywords == {"timeout": 1.5}
    fresh = connections.create_connection("default")  # a new connection, beside the test's transaction
    try:
        with fresh.cursor() as cursor:
            cursor.execute("SHOW statement_timeout")
            assert cursor.fetchone() == ("1500ms",)
    finally:
        fresh.close()


def test_celery_beat_and_workers_bound_their_queries(unbound):
    import mailservice.celery  # noqa: F401 - connects the receivers

    assert get_wait_callback() is None
    signals.beat_init.send(sender=None)  # as worker_init and worker_process_init, by the same receiver

    assert get_wait_callback().func is wait_for_answer


@pytest.fixture
def failing_session_save(client, settings):
    """A staff user's session that the database fails to save after the view has run (in SessionMiddleware)."""
    client.force_login(User.objects.create_user("operator", is_staff=True))
    client.raise_request_exception = False
    settings.SESSION_SAVE_EVERY_REQUEST = True

    def fail_with(error: Exception):
        return mock.patch.object(SessionStore, "save", side_effect=error)

    return fail_with


@pytest.mark.django_db
def test_a_database_error_raised_in_a_middleware_is_a_503_page_or_json(client, failing_session_save):
    with failing_session_save(OperationalError("the server closed the connection")):
        page = client.get("/dashboard/")
        data = client.get("/dashboard/data")

    assert (page.status_code, page["Content-Type"], page["Retry-After"]) == (503, "text/html; charset=utf-8", "5")
    assert b"Service unavailable" in page.content
    assert (data.status_code, data["Content-Type"], data["Retry-After"]) == (503, "application/json", "5")
    assert data.json() == {"detail": "The database is unavailable; try again shortly."}


@pytest.mark.django_db
def test_other_errors_still_get_djangos_500_page(client, failing_session_save):
    with failing_session_save(RuntimeError("a bug")):
        response = client.get("/dashboard/")

    assert response.status_code == 500
    assert not response.has_header("Retry-After")
