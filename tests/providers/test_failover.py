"""A provider that is down: its emails fail over at once, its breaker opens, a probe closes it later."""

import time

import pytest

from emails.models import Email, EmailEvent
from emails.services import email_send, emails_send
from providers import circuit
from tests.conftest import email_payload, make_emails
from tests.processes import wait_for
from tests.sink import SmtpSink, free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def secondary():
    sink = SmtpSink().start()
    yield sink
    sink.stop()


def test_it_fails_over_while_the_primary_is_down_and_returns_when_it_is_back(settings, secondary):
    primary_port = free_port()  # nothing listens: connection refused
    settings.MAIL_CIRCUIT_COOLDOWN = 0.5
    settings.MAIL_PROVIDERS = [
        {"name": "primary", "backend": "smtp", "options": {"port": primary_port, "timeout": 5}, "priority": 1},
        {**secondary.provider("secondary"), "priority": 2},
    ]

    started = time.monotonic()
    for email_id in make_emails(200):
        email_send(email_id)
    cooldowns = (time.monotonic() - started) / settings.MAIL_CIRCUIT_COOLDOWN

    assert Email.objects.filter(status=Email.Status.SENT, provider="secondary", attempts=1).count() == 200
    assert len(secondary.received) == 200
    # The first few went to the primary and failed over at once; then its breaker opened, and
    # only one probe per cool-down was let through to it.
    failovers = EmailEvent.objects.filter(type=EmailEvent.Type.RETRY, provider="primary").count()
    assert settings.MAIL_CIRCUIT_THRESHOLD <= failovers <= settings.MAIL_CIRCUIT_THRESHOLD + cooldowns + 1
    assert circuit.state("primary")["state"] in ("open", "half-open")

    primary = SmtpSink(port=primary_port).start()
    try:

        def next_email_reaches_primary() -> bool:
            [email_id] = make_emails(1)
            email_send(email_id)
            return bool(primary.received)

        wait_for(next_email_reaches_primary, timeout=30, what="a probe to reach the primary", interval=0.1)
        assert circuit.state("primary") == {"state": "closed", "failures": 0, "open_until": None}
        before = len(secondary.received)
        for email_id in make_emails(10):
            email_send(email_id)
        assert (len(primary.received), len(secondary.received)) == (11, before)
    finally:
        primary.stop()


def test_a_permanent_error_is_not_tried_at_another_provider(settings, secondary):
    primary = SmtpSink().start()
    try:
        primary.script("550 5.1.1 No such user")
        settings.MAIL_PROVIDERS = [
            {**primary.provider("primary"), "priority": 1},
            {**secondary.provider("secondary"), "priority": 2},
        ]
        [email_id] = make_emails(1)

        email_send(email_id)

        email = Email.objects.get(id=email_id)
        assert (email.status, email.provider, email.last_error) == ("FAILED", "primary", "SMTP 550 5.1.1 No such user")
        assert secondary.received == []
        assert circuit.state("primary")["failures"] == 0  # the message's fault, not the provider's
    finally:
        primary.stop()


def test_when_every_breaker_is_open_the_email_is_retried_later(settings, secondary):
    settings.MAIL_PROVIDERS = [secondary.provider("only")]
    for _ in range(settings.MAIL_CIRCUIT_THRESHOLD):
        circuit.record_failure("only")
    [email_id] = make_emails(1)

    email_send(email_id)

    email = Email.objects.get(id=email_id)
    # Counted as an attempt, so an outage longer than every retry still ends FAILED with the reason.
    assert (email.status, email.attempts) == ("PENDING", 1)
    assert email.last_error == "no provider available: every circuit breaker is open"
    assert email.next_attempt_at > email.created_at
    assert secondary.received == []


def test_an_email_that_failed_over_shows_each_try_in_order(alice, settings, secondary):
    settings.MAIL_PROVIDERS = [
        {"name": "primary", "backend": "smtp", "options": {"port": free_port(), "timeout": 5}, "priority": 1},
        {**secondary.provider("secondary"), "priority": 2},
    ]
    ids = [alice.post("/api/v1/emails", email_payload(), format="json").json()["id"] for _ in range(3)]

    emails_send(ids)  # one chunk, as a worker takes them

    for email_id in ids:
        events = alice.get(f"/api/v1/emails/{email_id}").json()["events"]
        assert [(e["type"], e["provider"]) for e in events] == [("retry", "primary"), ("sent", "secondary")]
