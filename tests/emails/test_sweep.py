"""The sweep re-enqueues what the broker lost: expired leases and due PENDING rows nobody picked up."""

import base64
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from emails.models import Email
from emails.queue import QUEUE, SEND_TASK
from emails.services import emails_sweep_stranded
from infra.redis import get_redis
from tests.conftest import email_payload

pytestmark = pytest.mark.django_db


def queued_task_ids() -> list[list[str]]:
    """The email ids of each send task waiting in the broker's queue, read from Celery's messages in Redis."""
    messages = [json.loads(raw) for raw in get_redis().lrange(QUEUE, 0, -1)]
    # Celery's message body is base64 JSON: [args, kwargs, embed].
    return [json.loads(base64.b64decode(m["body"]))[0][0] for m in messages if m["headers"]["task"] == SEND_TASK]


def queued_ids() -> list[str]:
    """The email ids waiting in the broker's queue."""
    return [email_id for ids in queued_task_ids() for email_id in ids]


@pytest.fixture(autouse=True)
def empty_queue():
    get_redis().delete(QUEUE)


@pytest.fixture
def email(alice) -> Email:
    return Email.objects.get(id=alice.post("/api/v1/emails", email_payload(), format="json").json()["id"])


def _processing(email: Email, *, attempts: int, lease_until) -> None:
    Email.objects.filter(id=email.id).update(status=Email.Status.PROCESSING, attempts=attempts, lease_until=lease_until)


def test_it_takes_back_an_expired_lease(email):
    now = timezone.now()
    _processing(email, attempts=1, lease_until=now - timedelta(seconds=1))

    result = emails_sweep_stranded(now=now)

    email.refresh_from_db()
    assert (email.status, email.attempts, email.lease_until) == (Email.Status.PENDING, 1, None)
    assert result.recovered == 1
    assert queued_ids() == [str(email.id)]
    assert email.events.get().type == "recovered"


def test_it_leaves_a_live_lease_alone(email):
    now = timezone.now()
    _processing(email, attempts=1, lease_until=now + timedelta(seconds=30))

    emails_sweep_stranded(now=now)

    email.refresh_from_db()
    assert email.status == Email.Status.PROCESSING
    assert queued_ids() == []


def test_it_fails_an_expired_lease_with_no_attempts_left(email, settings):
    now = timezone.now()
    _processing(email, attempts=settings.MAIL_MAX_ATTEMPTS, lease_until=now - timedelta(seconds=1))

    result = emails_sweep_stranded(now=now)

    email.refresh_from_db()
    assert email.status == Email.Status.FAILED
    assert email.last_error == "the worker was lost while sending it (gave up after 5 attempts)"
    assert (result.failed, queued_ids()) == (1, [])


def test_it_counts_lost_leases_and_fails_an_email_that_keeps_killing_its_worker(email, settings):
    settings.MAIL_MAX_ATTEMPTS = 3
    now = timezone.now()
    for lost in (1, 2):
        _processing(email, attempts=1, lease_until=now - timedelta(seconds=1))  # attempts left: not the cause
        assert emails_sweep_stranded(now=now).recovered == 1
        email.refresh_from_db()
        assert (email.status, email.leases_lost) == (Email.Status.PENDING, lost)

    _processing(email, attempts=1, lease_until=now - timedelta(seconds=1))
    assert emails_sweep_stranded(now=now).failed == 1

    email.refresh_from_db()
    assert (email.status, email.leases_lost) == (Email.Status.FAILED, 3)
    assert email.last_error == "the worker was lost while sending it, 3 times: its send may crash the worker"
    assert list(email.events.values_list("type", flat=True)) == ["recovered", "recovered", "failed"]


def test_it_requeues_recovered_emails_one_per_task(alice):
    ids = [alice.post("/api/v1/emails", email_payload(), format="json").json()["id"] for _ in range(3)]
    get_redis().delete(QUEUE)
    now = timezone.now()
    Email.objects.filter(id__in=ids).update(status=Email.Status.PROCESSING, lease_until=now - timedelta(seconds=1))

    assert emails_sweep_stranded(now=now).recovered == 3

    # One task each: an email that kills its worker takes no chunk-mate down with it again.
    assert sorted(queued_task_ids()) == sorted([[i] for i in ids])


def test_it_requeues_a_pending_email_whose_publish_was_lost(email, settings):
    later = email.next_attempt_at + timedelta(seconds=settings.MAIL_SWEEP_INTERVAL + 1)

    assert emails_sweep_stranded(now=later).requeued == 1
    assert queued_ids() == [str(email.id)]
    # Requeued once: the next sweep does not publish it again straight away.
    assert emails_sweep_stranded(now=later + timedelta(seconds=1)).requeued == 0


def test_it_does_not_requeue_a_fresh_or_future_email(alice, email):
    future = alice.post("/api/v1/emails", email_payload(send_at="2099-01-01T00:00:00Z"), format="json").json()["id"]

    assert emails_sweep_stranded(now=email.next_attempt_at).requeued == 0
    assert Email.objects.get(id=future).status == Email.Status.PENDING
    assert queued_ids() == []
