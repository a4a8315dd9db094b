"""Cancelling a PENDING email: it ends FAILED "cancelled", and no worker sends it, even one racing the cancel."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from emails.models import Email
from emails.services import emails_cancel, emails_send
from tests.conftest import make_emails
from tests.processes import wait_for


@pytest.mark.django_db
def test_it_fails_pending_emails_with_an_event_and_leaves_the_others(sending_to_sink):
    pending, processing, sent = make_emails(3)
    Email.objects.filter(id=processing).update(status="PROCESSING", lease_until=timezone.now() + timedelta(minutes=5))
    Email.objects.filter(id=sent).update(status="SENT")

    cancelled = emails_cancel(ids=[pending, processing, sent])

    assert [str(i) for i in cancelled] == [pending]
    email = Email.objects.get(id=pending)
    assert (email.status, email.last_error) == ("FAILED", "cancelled")
    assert [(e.type, e.detail) for e in email.events.all()] == [("cancelled", "cancelled")]
    assert Email.objects.get(id=processing).status == "PROCESSING"
    assert Email.objects.get(id=sent).status == "SENT"


@pytest.mark.django_db
def test_a_worker_does_not_send_a_cancelled_email(sending_to_sink):
    [email_id] = make_emails(1)
    emails_cancel(ids=[email_id])

    emails_send([email_id])  # its task arrives after the cancel

    assert sending_to_sink.received == []
    assert Email.objects.get(id=email_id).status == "FAILED"


@pytest.mark.django_db(transaction=True)
def test_a_cancel_that_waits_on_a_workers_claim_leaves_the_email_to_the_worker():
    [email_id] = make_emails(1)
    claimed, release = threading.Event(), threading.Event()

    def worker_claims() -> None:
        # A worker's claim, its transaction held open until the cancel is waiting on the row.
        with transaction.atomic():
            Email.objects.filter(id=email_id, status="PENDING").update(
                status="PROCESSING", lease_until=timezone.now() + timedelta(minutes=5)
            )
            claimed.set()
            release.wait(timeout=30)
        connections.close_all()

    outcome: list = []

    def operator_cancels() -> None:
        outcome.append(emails_cancel(ids=[email_id]))
        connections.close_all()

    worker = threading.Thread(target=worker_claims)
    worker.start()
    claimed.wait(timeout=30)
    cancel = threading.Thread(target=operator_cancels)
    cancel.start()

    def cancel_is_blocked() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return cursor.fetchone()[0] > 0

    wait_for(cancel_is_blocked, timeout=10, what="the cancel to wait for the claim's row lock")
    release.set()
    worker.join(timeout=30)
    cancel.join(timeout=30)

    assert outcome == [[]]  # the row it found after the claim committed was no longer PENDING
    email = Email.objects.get(id=email_id)
    assert (email.status, email.last_error) == ("PROCESSING", "")
