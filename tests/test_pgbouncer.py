"""Behind PgBouncer in transaction pooling mode (README "Behind PgBouncer"): the API accepts, the workers deliver every
email once, and a killed worker loses none, while all their processes share a few server connections, each lent for
one transaction at a time."""

from __future__ import annotations

import json
import urllib.request

import psycopg2
import pytest
from django.db import connection

from emails.models import Email
from emails.services import api_key_create
from tests.conftest import email_payload
from tests.emails import test_worker_crash as worker_crash
from tests.processes import PgBouncer, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

POOL_SIZE = 3
# Other than the services' own (MAIL_DATABASE_TIMEOUT), so that a session SET by them would show.
POOLER_STATEMENT_TIMEOUT_MS = 4000
SERVICES_DATABASE_TIMEOUT = "2"


@pytest.fixture
def pgbouncer(transactional_db, tmp_path):
    db = connection.settings_dict
    with PgBouncer(
        database=db["NAME"],
        user=db["USER"],
        server_host=db["HOST"] or "127.0.0.1",
        server_port=int(db["PORT"] or 5432),
        pool_size=POOL_SIZE,
        statement_timeout_ms=POOLER_STATEMENT_TIMEOUT_MS,
        log_dir=tmp_path,
    ) as bouncer:
        yield bouncer


@pytest.fixture
def services_behind_pgbouncer(pgbouncer, services):
    """The services fixture's processes, connecting through `pgbouncer` only (it outlives them: set up first)."""
    services.env.update(
        DATABASE_URL=pgbouncer.url, DATABASE_POOLING="transaction", MAIL_DATABASE_TIMEOUT=SERVICES_DATABASE_TIMEOUT
    )
    return services


def post(url: str, key: str, body: dict) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202
        return json.load(response)


def assert_pooled_by_transaction(pgbouncer: PgBouncer) -> None:
    """The services' transactions went through PgBouncer, pooled in transaction mode on no more server connections
    than its pool holds."""
    [pool] = pgbouncer.show("POOLS", database=pgbouncer.database)
    [stats] = pgbouncer.show("STATS", database=pgbouncer.database)
    servers = pgbouncer.show("SERVERS", database=pgbouncer.database)
    assert pool["pool_mode"] == "transaction"
    assert stats["total_xact_count"] > 0
    assert 0 < len(servers) <= POOL_SIZE


def assert_no_session_state_left(pgbouncer: PgBouncer) -> None:
    """Every server connection the services used still has the pooler's statement timeout: none carries one a
    service SET for its own session."""
    # One open transaction per client: each holds a server connection of its own, so together they see them all.
    clients = [psycopg2.connect(pgbouncer.url, connect_timeout=5) for _ in range(POOL_SIZE)]
    try:
        timeouts = []
        for client in clients:
            with client.cursor() as cursor:
                cursor.execute("SHOW statement_timeout")
                timeouts.append(cursor.fetchone()[0])
    finally:
        for client in clients:
            client.close()
    assert timeouts == [f"{POOLER_STATEMENT_TIMEOUT_MS // 1000}s"] * POOL_SIZE


def test_it_delivers_each_email_posted_to_the_api_exactly_once(sending_to_sink, services_behind_pgbouncer, pgbouncer):
    services = services_behind_pgbouncer
    url = services.web()
    services.worker()
    services.worker()
    _, key = api_key_create(name="behind-pgbouncer")

    ids = [post(f"{url}/api/v1/emails", key, email_payload(to=[f"user{n}@example.org"]))["id"] for n in range(20)]
    batch = [email_payload(to=[f"batch{n}@example.org"]) for n in range(100)]
    ids += [result["id"] for result in post(f"{url}/api/v1/emails/batch", key, {"emails": batch})["results"]]

    wait_for(
        lambda: Email.objects.filter(id__in=ids, status=Email.Status.SENT).count() == len(ids),
        timeout=60,
        what="every email to be SENT",
    )
    assert sending_to_sink.count_by_id() == {email_id: 1 for email_id in ids}
    assert_pooled_by_transaction(pgbouncer)
    # The web threads and worker processes keep their connections open: in session mode those past the pool size
    # would have waited for a server connection that no client gives back.
    assert len(pgbouncer.show("CLIENTS", database=pgbouncer.database)) > POOL_SIZE
    assert_no_session_state_left(pgbouncer)


def test_a_killed_worker_loses_no_email_and_resends_at_most_those_in_flight(
    sending_to_sink, services_behind_pgbouncer, pgbouncer
):
    worker_crash.test_it_sends_every_email_after_the_worker_is_killed_and_resends_at_most_those_in_flight(
        sending_to_sink, services_behind_pgbouncer
    )
    assert_pooled_by_transaction(pgbouncer)
    assert_no_session_state_left(pgbouncer)
