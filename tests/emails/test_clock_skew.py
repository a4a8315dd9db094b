"""One clock: leases, due times and the sweep's cut-offs are PostgreSQL's, so a worker host whose clock runs
120 s ahead neither takes back another worker's live lease nor sends a scheduled email early."""

import re
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from emails.models import Email, EmailEvent
from mailservice.celery import app
from tests.conftest import make_emails
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SKEW = 120


def test_a_worker_whose_clock_runs_ahead_neither_reclaims_a_live_lease_nor_sends_early(sending_to_sink, services):
    sink = sending_to_sink
    env = {"MAIL_LEASE_SECONDS": "30", "MAIL_SWEEP_INTERVAL": "1"}
    sink.set_latency(4)  # the first email's send holds its lease for a while
    honest = services.worker(**env)
    [held] = make_emails(1)
    wait_for(lambda: Email.objects.filter(id=held, status=Email.Status.PROCESSING).exists(), timeout=30, what="claim")

    # By its clock the lease ran out 90 s ago; the sweep runs in this worker.
    ahead = services.worker(clock_skew=SKEW, queues="celery,ahead", **env)
    wait_for(lambda: "ready." in ahead.log(), timeout=30, what="the skewed worker to start")
    app.send_task("emails.tasks.sweep_stranded", queue="ahead")
    wait_for(lambda: re.search(r"sweep_stranded\[.*\] succeeded", ahead.log()), timeout=30, what="its sweep")

    assert Email.objects.get(id=held).status == Email.Status.PROCESSING, "the live lease was left alone"
    wait_for(lambda: Email.objects.filter(id=held, status=Email.Status.SENT).exists(), timeout=30, what="SENT")
    assert not EmailEvent.objects.filter(type=EmailEvent.Type.RECOVERED).exists()
    assert sink.count_by_id() == {held: 1}

    # Only the skewed worker is left: it gets the scheduled email's task, and the beat's sweeps.
    honest.stop()
    sink.set_latency(0)
    send_at = timezone.now() + timedelta(seconds=5)
    [scheduled] = make_emails(1, send_at=send_at)
    services.beat(**env)

    wait_for(lambda: Email.objects.filter(id=scheduled, status=Email.Status.SENT).exists(), timeout=60, what="SENT")
    [received] = [r for r in sink.received if r.email_id == scheduled]
    assert received.at >= send_at.timestamp(), f"sent {send_at.timestamp() - received.at:.2f}s early"
    print(f"sent {received.at - send_at.timestamp():.2f}s after its send_at, at {time.strftime('%X')}")
