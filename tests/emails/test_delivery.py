"""An email POSTed to the API reaches a real SMTP server through a real worker process."""

import pytest

from emails.models import Email
from tests.conftest import email_payload
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_delivers_a_posted_email_through_a_worker(alice, sending_to_sink, services):
    worker = services.worker()

    response = alice.post("/api/v1/emails", email_payload(html="<p>Thank you</p>"), format="json")
    assert response.status_code == 202
    email_id = response.json()["id"]

    email = wait_for(
        lambda: Email.objects.filter(id=email_id, status=Email.Status.SENT).first(), timeout=60, what="SENT"
    )
    assert email.attempts == 1
    assert email.provider == "sink"
    assert email.provider_message_id == f"<{email_id}@example.com>"
    [received] = sending_to_sink.received
    assert received.email_id == email_id
    assert received.rcpt_tos == ["alice@example.org"]
    assert received.message["Subject"] == "Your order"
    assert received.message["Message-ID"] == email.provider_message_id
    assert [part.get_content_type() for part in received.message.walk()][1:] == ["text/plain", "text/html"]

    detail = alice.get(f"/api/v1/emails/{email_id}").json()
    assert detail["status"] == "SENT"
    assert [event["type"] for event in detail["events"]] == ["sent"]
    # The worker's log names the email by id, never by its content or addresses.
    log = worker.log()
    assert email_id in log
    for secret in ("Your order", "Thank you", "alice@example.org", "shop@example.com"):
        assert secret not in log
