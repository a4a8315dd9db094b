"""A worker SIGKILLed mid-send loses no email: leases expire, the sweep re-enqueues, a new worker sends."""

import pytest

from emails.models import Email, EmailEvent
from tests.conftest import email_payload
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

EMAILS = 300


def test_it_sends_every_email_after_the_worker_is_killed(alice, sending_to_sink, services):
    sink = sending_to_sink
    sink.set_latency(0.02)  # slow enough that the kill lands while messages are in flight
    ids = []
    for n in range(EMAILS):
        response = alice.post("/api/v1/emails", email_payload(subject=f"Order {n}"), format="json")
        assert response.status_code == 202
        ids.append(response.json()["id"])

    fast_recovery = {"MAIL_LEASE_SECONDS": "3", "MAIL_SWEEP_INTERVAL": "1"}
    first = services.worker(**fast_recovery)
    wait_for(lambda: len(sink.received) >= EMAILS // 4, timeout=60, what="the first worker to be sending")
    first.kill()
    in_flight = Email.objects.filter(status=Email.Status.PROCESSING).count()
    assert 0 < len(sink.received) < EMAILS, "the kill must land mid-run"

    services.worker(**fast_recovery)
    services.beat(**fast_recovery)
    wait_for(
        lambda: Email.objects.filter(status=Email.Status.SENT).count() == EMAILS,
        timeout=120,
        what="every email to be SENT",
    )

    counts = sink.count_by_id()
    assert set(counts) == set(ids), "every email arrived at the sink"
    duplicates = sum(counts.values()) - len(counts)
    assert duplicates <= in_flight, f"{duplicates} duplicates, but only {in_flight} emails were in flight"
    # The emails the dead worker held came back through lease expiry and the sweep.
    assert EmailEvent.objects.filter(type=EmailEvent.Type.RECOVERED).count() == in_flight
    print(f"in flight at the kill: {in_flight}, duplicates at the sink: {duplicates}")
