"""Transient failures are retried with backoff; permanent ones fail at once. One attempt per call."""

import pytest
from django.utils import timezone

from emails.models import Email, EmailEvent
from emails.services import email_send, emails_send
from tests.conftest import email_payload, make_due, make_emails
from tests.sink import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def email(alice) -> Email:
    response = alice.post("/api/v1/emails", email_payload(), format="json")
    return Email.objects.get(id=response.json()["id"])


def _attempt_when_due(email: Email) -> Email:
    make_due(email.id)
    email_send(email.id)
    email.refresh_from_db()
    return email


def test_it_retries_on_451_and_sends_on_the_third_attempt(email, sending_to_sink, settings):
    sending_to_sink.script("451 4.7.1 Greylisted, try again later", "451 4.7.1 Greylisted, try again later")

    before = timezone.now()
    email = _attempt_when_due(email)
    assert (email.status, email.attempts) == (Email.Status.PENDING, 1)
    assert "451" in email.last_error and "Greylisted" in email.last_error
    first_delay = (email.next_attempt_at - before).total_seconds()
    assert 0.8 * settings.MAIL_RETRY_BACKOFF <= first_delay <= 1.2 * settings.MAIL_RETRY_BACKOFF + 1

    email_send(email.id)  # not due yet: nothing happens
    email.refresh_from_db()
    assert (email.status, email.attempts) == (Email.Status.PENDING, 1)

    before = timezone.now()
    email = _attempt_when_due(email)
    assert (email.status, email.attempts) == (Email.Status.PENDING, 2)
    second_delay = (email.next_attempt_at - before).total_seconds()
    assert 1.6 * settings.MAIL_RETRY_BACKOFF <= second_delay <= 2.4 * settings.MAIL_RETRY_BACKOFF + 1

    email = _attempt_when_due(email)
    assert (email.status, email.attempts) == (Email.Status.SENT, 3)
    assert email.last_error == ""
    assert [r.email_id for r in sending_to_sink.received] == [str(email.id)]
    assert list(email.events.values_list("type", flat=True)) == ["retry", "retry", "sent"]


def test_it_fails_at_once_on_550(email, sending_to_sink):
    sending_to_sink.script("550 5.1.1 Mailbox does not exist")

    email = _attempt_when_due(email)

    assert (email.status, email.attempts) == (Email.Status.FAILED, 1)
    assert email.last_error == "SMTP 550 5.1.1 Mailbox does not exist"
    assert sending_to_sink.received == []
    event = email.events.get()
    assert (event.type, event.provider, event.detail) == ("failed", "sink", email.last_error)


def test_it_fails_after_the_last_attempt(email, sending_to_sink, settings):
    settings.MAIL_MAX_ATTEMPTS = 2
    sending_to_sink.script("421 4.3.2 Service shutting down", "421 4.3.2 Service shutting down")

    email = _attempt_when_due(email)
    assert email.status == Email.Status.PENDING
    email = _attempt_when_due(email)

    assert (email.status, email.attempts) == (Email.Status.FAILED, 2)
    assert email.last_error == "SMTP 421 4.3.2 Service shutting down (gave up after 2 attempts)"


def test_it_retries_when_the_server_is_unreachable(email, settings):
    settings.MAIL_PROVIDERS = [{"name": "down", "backend": "smtp", "options": {"port": free_port(), "timeout": 2}}]

    email = _attempt_when_due(email)

    assert (email.status, email.attempts) == (Email.Status.PENDING, 1)
    assert "ConnectionRefusedError" in email.last_error
    assert email.events.get().type == EmailEvent.Type.RETRY


def test_it_does_not_send_a_sent_email_again(email, sending_to_sink):
    email = _attempt_when_due(email)
    assert email.status == Email.Status.SENT

    email_send(email.id)  # a duplicate task, as the broker may deliver

    email.refresh_from_db()
    assert email.attempts == 1
    assert len(sending_to_sink.received) == 1


def test_it_reuses_the_connection_across_sends(settings, sending_to_sink):
    ids = make_emails(100)

    emails_send(ids)

    assert Email.objects.filter(status=Email.Status.SENT).count() == 100
    # One connection per sending thread at most, however many emails go through it.
    assert sending_to_sink.connections <= settings.MAIL_SEND_THREADS < len(ids)
