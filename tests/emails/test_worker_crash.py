"""A worker SIGKILLed mid-send loses no email and sends again only what it had in flight: each outcome is
recorded as its send completes (not when its task's chunk ends), leases expire, the sweep re-enqueues, the
other worker sends."""

import pytest

from emails.models import Email, EmailEvent
from tests.conftest import make_emails
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

EMAILS = 300
PROCESSES = 2  # the worker's pool processes, all killed with it
SEND_THREADS = 8


def test_it_sends_every_email_after_the_worker_is_killed_and_resends_at_most_those_in_flight(sending_to_sink, services):
    sink = sending_to_sink
    sink.set_latency(0.04)  # slow enough that the kill lands while messages are in flight
    ids = make_emails(EMAILS)

    # Send threads as the bound below counts them: at 40 ms the workers would use every one they have.
    fast_recovery = {"MAIL_LEASE_SECONDS": "3", "MAIL_SWEEP_INTERVAL": "1", "MAIL_SEND_THREADS": str(SEND_THREADS)}
    first = services.worker(concurrency=PROCESSES, **fast_recovery)
    services.worker(concurrency=PROCESSES, **fast_recovery)
    wait_for(lambda: len(sink.received) >= EMAILS // 3, timeout=60, what="the workers to be sending")
    first.kill()
    assert 0 < len(sink.received) < EMAILS, "the kill must land mid-run"

    services.beat(**fast_recovery)
    wait_for(
        lambda: Email.objects.filter(status=Email.Status.SENT).count() == EMAILS,
        timeout=120,
        what="every email to be SENT",
    )

    counts = sink.count_by_id()
    assert set(counts) == set(ids), "every email arrived at the sink"
    duplicates = sum(counts.values()) - len(counts)
    in_flight_at_most = PROCESSES * SEND_THREADS
    assert duplicates <= in_flight_at_most, f"{duplicates} duplicates; at most {in_flight_at_most} were in flight"
    # Each duplicate was an email the dead worker held, taken back through lease expiry and the sweep.
    recovered = EmailEvent.objects.filter(type=EmailEvent.Type.RECOVERED).count()
    assert duplicates <= recovered
    print(f"duplicates at the sink: {duplicates} (bound {in_flight_at_most}); recovered by the sweep: {recovered}")
