"""/metrics: Prometheus text, with the counters of every process (a worker's included)."""

import re

import pytest

from emails.models import Email
from tests.conftest import email_payload
from tests.processes import wait_for


def _value(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.mark.django_db(transaction=True)
def test_metrics_show_a_send_made_by_a_separate_worker_process(alice, client, sending_to_sink, services):
    before = client.get("/metrics").content.decode()
    services.worker()

    email_id = alice.post("/api/v1/emails", email_payload(), format="json").json()["id"]
    wait_for(lambda: Email.objects.filter(id=email_id, status="SENT").exists(), timeout=60, what="SENT")

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    sent = 'mailservice_emails_sent_total{provider="sink"}'
    assert _value(text, sent) == _value(before, sent) + 1  # counted in the worker's process
    assert _value(text, "mailservice_emails_accepted_total") == _value(before, "mailservice_emails_accepted_total") + 1
    assert 'mailservice_send_seconds_count{provider="sink"}' in text
    assert _value(text, 'mailservice_emails{status="SENT"}') == 1
    assert "mailservice_queue_depth" in text and "mailservice_oldest_pending_age_seconds" in text
