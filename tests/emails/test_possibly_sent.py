"""A connection dropped after the message was handed over: the attempt is recorded as possibly sent (an
event the API shows, a metric), the email is retried as after any transient failure, and ends SENT."""

import re

import pytest
from django.test import Client

from emails.models import Email
from emails.services import email_send
from tests.conftest import email_payload, make_due
from tests.sink import DROP

pytestmark = pytest.mark.django_db


def possible_duplicates(provider: str) -> float:
    text = Client().get("/metrics").content.decode()
    match = re.search(rf'^mailservice_possible_duplicates_total{{provider="{provider}"}} (\S+)$', text, re.M)
    return float(match[1]) if match else 0.0


def test_a_drop_after_data_is_recorded_as_possibly_sent_and_retried(alice, admin_client, sending_to_sink):
    sending_to_sink.script(DROP)  # the message arrives, the server's reply never does
    email_id = alice.post("/api/v1/emails", email_payload(), format="json").json()["id"]
    before = possible_duplicates("sink")

    email_send(email_id)

    email = Email.objects.get(id=email_id)
    assert (email.status, email.attempts) == (Email.Status.PENDING, 1)
    assert "possibly sent" in email.last_error
    assert possible_duplicates("sink") == before + 1

    make_due(email_id)
    email_send(email_id)

    shown = alice.get(f"/api/v1/emails/{email_id}").json()
    assert (shown["status"], shown["attempts"]) == ("SENT", 2)
    assert [event["type"] for event in shown["events"]] == ["possibly_sent", "sent"]
    page = admin_client.get(f"/admin/emails/email/{email_id}/change/").content.decode()
    assert "possibly_sent" in page and "possibly sent, no reply to the message" in page
    # Both went out: the duplicate is counted, not silent.
    assert [r.email_id for r in sending_to_sink.received] == [email_id, email_id]


def test_a_refused_reply_is_an_ordinary_retry_and_counts_no_possible_duplicate(alice, sending_to_sink):
    sending_to_sink.script("451 4.3.0 Try again later")
    email_id = alice.post("/api/v1/emails", email_payload(), format="json").json()["id"]
    before = possible_duplicates("sink")

    email_send(email_id)

    assert [e.type for e in Email.objects.get(id=email_id).events.all()] == ["retry"]
    assert possible_duplicates("sink") == before
