"""An ESP through django-anymail (Mailgun), faked only at its HTTP API."""

from urllib.parse import parse_qs

import pytest
import responses

from emails.models import Email
from emails.services import email_send
from tests.conftest import make_due, make_emails

pytestmark = pytest.mark.django_db

API = "https://api.mailgun.net/v3/example.com/messages"


@pytest.fixture
def mailgun(settings):
    settings.MAIL_PROVIDERS = [{"name": "mailgun", "backend": "mailgun", "options": {"api_key": "key-test"}}]
    with responses.RequestsMock() as api:
        yield api


def _send_when_due(email_id: str) -> Email:
    make_due(email_id)
    email_send(email_id)
    return Email.objects.get(id=email_id)


def test_a_200_is_sent_with_the_esps_message_id(mailgun):
    mailgun.post(API, json={"id": "<20261123.1.ABC@example.com>", "message": "Queued. Thank you."})
    [email_id] = make_emails(1)

    email = _send_when_due(email_id)

    assert (email.status, email.attempts, email.provider) == ("SENT", 1, "mailgun")
    assert email.provider_message_id == "<20261123.1.ABC@example.com>"
    request = mailgun.calls[0].request
    assert request.headers["Authorization"].startswith("Basic ")  # anymail's auth with the api_key
    form = parse_qs(request.body)
    assert (form["subject"], form["to"]) == (["Your order"], ["alice@example.org"])


def test_a_429_is_retried_and_sent_on_a_later_attempt(mailgun):
    mailgun.post(API, status=429, json={"message": "Too many requests"})
    mailgun.post(API, json={"id": "<20261123.2.ABC@example.com>", "message": "Queued. Thank you."})
    [email_id] = make_emails(1)

    email = _send_when_due(email_id)
    assert (email.status, email.attempts) == ("PENDING", 1)
    assert "429" in email.last_error

    email = _send_when_due(email_id)
    assert (email.status, email.attempts, email.provider_message_id) == ("SENT", 2, "<20261123.2.ABC@example.com>")


def test_a_400_fails_at_once_with_the_esps_error(mailgun):
    error = "'to' parameter is not a valid address. please check documentation"
    mailgun.post(API, status=400, json={"message": error})
    [email_id] = make_emails(1)

    email = _send_when_due(email_id)

    assert (email.status, email.attempts) == ("FAILED", 1)
    assert error in email.last_error
    assert len(mailgun.calls) == 1


def test_a_5xx_is_transient(mailgun):
    mailgun.post(API, status=503, body="Service Unavailable")
    [email_id] = make_emails(1)

    email = _send_when_due(email_id)

    assert (email.status, email.attempts) == ("PENDING", 1)
    assert "503" in email.last_error
