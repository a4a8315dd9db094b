"""An email whose send kills its worker process fails after MAIL_MAX_ATTEMPTS lost leases, saying why,
and takes none of its chunk-mates down with it more than once: they are delivered once each."""

from datetime import timedelta

import pytest
from django.db.models.functions import Now
from django.utils import timezone

from emails import queue
from emails.models import Email
from tests.conftest import make_emails
from tests.crashing_provider import POISON
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

MAX_ATTEMPTS = 3


def test_an_email_that_kills_its_worker_fails_after_max_lost_leases_and_its_chunk_is_delivered_once(
    settings, sink, services
):
    settings.MAIL_PROVIDERS = [{**sink.provider(), "backend": "tests.crashing_provider.EmailBackend"}]
    sink.set_latency(0.02)
    # Stored not yet due, so that nothing is published before they all go out in one task.
    later = timezone.now() + timedelta(days=1)
    ids = make_emails(5, send_at=later) + make_emails(1, to=[POISON], send_at=later) + make_emails(5, send_at=later)
    Email.objects.filter(id__in=ids).update(next_attempt_at=Now(), send_at=None)
    [poison] = Email.objects.filter(to=[POISON]).values_list("id", flat=True)

    # One send at a time: what completed before the crash was recorded, nothing else was in flight.
    env = {"MAIL_LEASE_SECONDS": "3", "MAIL_SWEEP_INTERVAL": "1", "MAIL_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
           "MAIL_SEND_THREADS": "1"}  # fmt: skip
    services.worker(**env)
    services.beat(**env)
    assert queue.publish(ids) == len(ids)  # one chunk, the poison in the middle

    wait_for(
        lambda: Email.objects.filter(id=poison, status=Email.Status.FAILED).exists(),
        timeout=90,
        what="the poison email to end FAILED",
    )
    email = Email.objects.get(id=poison)
    assert email.leases_lost == MAX_ATTEMPTS
    assert (
        email.last_error == f"the worker was lost while sending it, {MAX_ATTEMPTS} times: its send may crash the worker"
    )
    wait_for(
        lambda: Email.objects.filter(status=Email.Status.SENT).count() == len(ids) - 1,
        timeout=30,
        what="every other email to be SENT",
    )
    counts = sink.count_by_id()
    assert set(counts) == set(ids) - {str(poison)}
    assert set(counts.values()) == {1}, f"delivered more than once: {counts}"
