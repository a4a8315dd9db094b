"""send_at: the email waits PENDING until then, and goes within seconds after, not at a later sweep."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from emails.models import Email
from emails.services import emails_sweep_stranded
from tests.conftest import email_payload, make_emails
from tests.emails.test_sweep import queued_ids
from tests.processes import wait_for


@pytest.mark.django_db(transaction=True)
def test_an_email_due_in_3_seconds_arrives_between_3_and_8_seconds(alice, sending_to_sink, services):
    services.worker()
    submitted = time.time()
    send_at = (timezone.now() + timedelta(seconds=3)).isoformat()

    email_id = alice.post("/api/v1/emails", email_payload(send_at=send_at), format="json").json()["id"]

    assert Email.objects.get(id=email_id).status == "PENDING"
    [received] = wait_for(lambda: sending_to_sink.received, timeout=30, what="the email at the sink")
    assert 3 <= received.at - submitted <= 8, f"arrived {received.at - submitted:.2f}s after submission"
    # The worker records SENT just after the server's reply.
    wait_for(lambda: Email.objects.filter(id=email_id, status="SENT").exists(), timeout=10, what="SENT")


@pytest.mark.django_db
def test_the_sweep_publishes_an_email_as_its_time_comes(settings):
    settings.MAIL_SWEEP_INTERVAL = 60
    now = timezone.now()
    [tomorrow] = make_emails(1, send_at=now + timedelta(days=1))

    assert emails_sweep_stranded(now=now).upcoming == 0
    assert queued_ids() == []  # a day off: nothing waits in the broker for it

    result = emails_sweep_stranded(now=now + timedelta(days=1) - timedelta(seconds=30))

    assert result.upcoming == 1
    assert queued_ids() == [tomorrow]


@pytest.mark.django_db
def test_send_at_without_a_time_zone_is_a_400_naming_it(alice):
    response = alice.post("/api/v1/emails", email_payload(send_at="2030-01-31T09:00:00"), format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["send_at"]
    assert "Give a time zone" in response.json()["send_at"][0]
    assert not Email.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("send_at", ["2030-01-31T09:00:00Z", "2030-01-31T10:00:00+01:00"])
def test_send_at_with_a_time_zone_or_an_offset_is_taken_as_that_moment(alice, send_at):
    response = alice.post("/api/v1/emails", email_payload(send_at=send_at), format="json")

    assert response.status_code == 202
    assert response.json()["send_at"] == "2030-01-31T09:00:00Z"
