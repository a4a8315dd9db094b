"""Delivery events from an ESP's tracking webhook (Mailgun's real, signed JSON payloads) land on the
email; a hard bounce suppresses the address for the key whose email bounced, and that key's later emails
to it are not sent."""

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime

import pytest
import responses

from emails.models import Email, EmailEvent, Suppression
from emails.services import email_send
from tests.conftest import email_payload
from tests.emails.webhook_routes import webhooks_configured

pytestmark = pytest.mark.django_db

API = "https://api.mailgun.net/v3/example.com/messages"
WEBHOOK = "/webhooks/mailgun/tracking/"
SIGNING_KEY = "mailgun-signing-key"
BASIC_AUTH = "mailgun:webhook-secret"
EVENT_TIME = time.time() + 60.25  # a minute after the send, as Mailgun reports it


@pytest.fixture
def mailgun():
    providers = [{"name": "mailgun", "backend": "mailgun", "options": {"api_key": "key-test"}}]
    with (
        webhooks_configured(providers=providers, secret=BASIC_AUTH, MAILGUN_WEBHOOK_SIGNING_KEY=SIGNING_KEY),
        responses.RequestsMock(assert_all_requests_are_fired=False) as api,
    ):
        yield api


def _sent_via_mailgun(alice, mailgun, to: str, message_id: str) -> str:
    mailgun.post(API, json={"id": f"<{message_id}>", "message": "Queued. Thank you."})
    email_id = alice.post("/api/v1/emails", email_payload(to=[to]), format="json").json()["id"]
    email_send(email_id)
    assert Email.objects.get(id=email_id).status == "SENT"
    return email_id


def _signed(event_data: dict, key: str = SIGNING_KEY) -> dict:
    timestamp, token = "1795407600", "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0"
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": event_data}


def _event(event: str, recipient: str, message_id: str, **extra) -> dict:
    return {
        "event": event,
        "timestamp": EVENT_TIME,
        "id": "CPgfbmQMTCKtHW6uIWtuVe",
        "log-level": "info" if event == "delivered" else "error",
        "recipient": recipient,
        "recipient-domain": recipient.split("@")[1],
        "envelope": {"transport": "smtp", "sender": "shop@example.com", "targets": recipient},
        "message": {"headers": {"to": recipient, "message-id": message_id, "from": "shop@example.com"}, "size": 512},
        "flags": {"is-routed": False, "is-authenticated": True, "is-system-test": False, "is-test-mode": False},
        "tags": [],
        "user-variables": {},
        **extra,
    }


def _post(client, body: dict, auth: str | None = BASIC_AUTH):
    headers = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    return client.post(WEBHOOK, json.dumps(body), content_type="application/json", **headers)


def test_a_delivered_event_lands_on_the_email(alice, mailgun, client):
    email_id = _sent_via_mailgun(alice, mailgun, "alice@example.org", "20261123.1.ABC@example.com")
    delivery_status = {"tls": True, "code": 250, "message": "OK", "description": "", "attempt-no": 1}

    response = _post(
        client,
        _signed(
            _event(
                "delivered", "alice@example.org", "20261123.1.ABC@example.com", **{"delivery-status": delivery_status}
            )
        ),
    )

    assert response.status_code == 200
    events = alice.get(f"/api/v1/emails/{email_id}").json()["events"]
    assert [(e["type"], e["provider"]) for e in events] == [("sent", "mailgun"), ("delivered", "mailgun")]
    assert events[1]["at"] == datetime.fromtimestamp(EVENT_TIME, tz=UTC).isoformat().replace("+00:00", "Z")
    assert not Suppression.objects.exists()


def test_a_hard_bounce_suppresses_the_address_for_later_emails(alice, mailgun, client):
    email_id = _sent_via_mailgun(alice, mailgun, "Bob <Bob@example.org>", "20261123.2.ABC@example.com")
    delivery_status = {
        "code": 550,
        "message": "5.1.1 The email account that you tried to reach does not exist.",
        "description": "",
        "attempt-no": 1,
    }
    bounce = _event(
        "failed",
        "bob@example.org",
        "20261123.2.ABC@example.com",
        severity="permanent",
        reason="bounce",
        **{"delivery-status": delivery_status},
    )

    assert _post(client, _signed(bounce)).status_code == 200

    bounced = EmailEvent.objects.get(email_id=email_id, type="bounced")
    assert "does not exist" in bounced.detail
    suppression = Suppression.objects.get()
    assert (suppression.api_key, suppression.address, suppression.reason, str(suppression.email_id)) == (
        alice.api_key,
        "bob@example.org",
        "bounced",
        email_id,
    )

    calls_before = len(mailgun.calls)
    later = alice.post("/api/v1/emails", email_payload(to=["bob@example.org"]), format="json").json()["id"]
    email_send(later)

    email = Email.objects.get(id=later)
    assert (email.status, email.last_error) == ("FAILED", "suppressed")
    assert len(mailgun.calls) == calls_before  # nothing reached the ESP


def test_only_suppressed_recipients_are_left_out(alice, mailgun):
    Suppression.objects.create(address="bob@example.org", reason="complained")  # no key: for every key
    mailgun.post(API, json={"id": "<20261123.3.ABC@example.com>", "message": "Queued. Thank you."})
    email_id = alice.post(
        "/api/v1/emails", email_payload(to=["alice@example.org"], cc=["bob@example.org"]), format="json"
    ).json()["id"]

    email_send(email_id)

    assert Email.objects.get(id=email_id).status == "SENT"
    sent = mailgun.calls[0].request.body
    assert "alice%40example.org" in sent and "bob%40example.org" not in sent
    assert EmailEvent.objects.get(email_id=email_id, type="suppressed").detail == "bob@example.org"


def test_a_temporary_failure_does_not_suppress(alice, mailgun, client):
    _sent_via_mailgun(alice, mailgun, "carol@example.org", "20261123.4.ABC@example.com")
    deferred = _event(
        "failed",
        "carol@example.org",
        "20261123.4.ABC@example.com",
        severity="temporary",
        reason="generic",
        **{"delivery-status": {"code": 452, "message": "4.2.2 Mailbox full"}},
    )

    assert _post(client, _signed(deferred)).status_code == 200

    assert EmailEvent.objects.filter(type="deferred").count() == 1
    assert not Suppression.objects.exists()


@pytest.mark.parametrize(
    ("auth", "key"),
    [(None, SIGNING_KEY), ("mailgun:wrong", SIGNING_KEY), (BASIC_AUTH, "not-the-signing-key")],
    ids=["no secret", "wrong secret", "bad signature"],
)
def test_a_webhook_without_the_secret_is_refused(alice, mailgun, client, auth, key):
    email_id = _sent_via_mailgun(alice, mailgun, "dave@example.org", "20261123.5.ABC@example.com")
    bounce = _event("failed", "dave@example.org", "20261123.5.ABC@example.com", severity="permanent", reason="bounce")

    response = _post(client, _signed(bounce, key=key), auth=auth)

    assert response.status_code in (400, 401, 403)
    assert list(EmailEvent.objects.filter(email_id=email_id).values_list("type", flat=True)) == ["sent"]
    assert not Suppression.objects.exists()
