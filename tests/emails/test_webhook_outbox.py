"""Every change a webhook hears of is written to the outbox in the transaction of the change: a send's outcome,
a cancel, a lost worker's last lease, a provider's tracking event; only to the webhooks of the email's own key
that ask for that event, with the contract's body."""

from datetime import timedelta

import pytest
from django.utils import timezone

from emails.models import Email, Webhook, WebhookMessage
from emails.services import (
    api_key_create,
    email_create,
    email_record_delivery_event,
    email_send,
    emails_cancel,
    emails_sweep_stranded,
    suppression_add,
)
from emails.services.webhook_outbox import opened_payload
from tests.conftest import make_due

pytestmark = pytest.mark.django_db

FIELDS = {"from_email": "Shop <shop@example.com>", "to": ["alice@example.org"], "subject": "Hi", "text": "Hello"}


@pytest.fixture
def shop():
    api_key, _ = api_key_create(name="shop")
    return api_key


def _email(api_key, **fields) -> Email:
    email = email_create(api_key=api_key, **{**FIELDS, "tags": ["orders"], "metadata": {"order": "42"}, **fields})
    make_due(email.id)
    return email


def test_a_sent_email_writes_email_sent_for_each_webhook_of_its_key_that_asks(shop):
    every = Webhook.objects.create(api_key=shop, url="https://hooks.example.com/all")
    failures_only = Webhook.objects.create(api_key=shop, url="https://hooks.example.com/f", events=["email.failed"])
    other_key, _ = api_key_create(name="other")
    Webhook.objects.create(api_key=other_key, url="https://hooks.example.com/other")
    email = _email(shop)

    email_send(email.id)

    [message] = WebhookMessage.objects.all()
    assert (message.webhook_id, message.email_id, message.type) == (every.id, email.id, "email.sent")
    body = opened_payload(message.payload)  # its copy of the metadata is sealed as the email's is
    assert body["type"] == "email.sent" and body["timestamp"]
    data = body["data"]
    sent = Email.objects.get(id=email.id)
    assert data["id"] == str(email.id) and data["status"] == "SENT"
    assert (data["to"], data["tags"], data["metadata"]) == (["alice@example.org"], ["orders"], {"order": "42"})
    assert (data["provider"], data["provider_message_id"], data["attempts"]) == (
        sent.provider, sent.provider_message_id, 1,
    )  # fmt: skip
    assert data["event"]["type"] == "email.sent" and data["event"]["detail"] == sent.provider_message_id
    assert not failures_only.messages.exists()


def test_a_cancelled_email_writes_email_failed(shop):
    Webhook.objects.create(api_key=shop, url="https://hooks.example.com/all")
    email = _email(shop, send_at=None)

    emails_cancel(ids=[email.id])

    [message] = WebhookMessage.objects.all()
    assert message.type == "email.failed"
    assert (message.payload["data"]["status"], message.payload["data"]["last_error"]) == ("FAILED", "cancelled")


def test_an_email_every_recipient_of_which_is_suppressed_writes_email_failed(shop):
    Webhook.objects.create(api_key=shop, url="https://hooks.example.com/all")
    suppression_add(api_key_id=shop.id, address="alice@example.org", reason="bounced")
    email = _email(shop)

    email_send(email.id)

    [message] = WebhookMessage.objects.all()
    assert message.type == "email.failed" and message.payload["data"]["last_error"] == "suppressed"


def test_a_provider_bounce_writes_email_bounced_and_an_inactive_webhook_gets_nothing(shop):
    Webhook.objects.create(api_key=shop, url="https://hooks.example.com/all")
    Webhook.objects.create(api_key=shop, url="https://hooks.example.com/off", active=False)
    email = _email(shop)
    email_send(email.id)
    sent = Email.objects.get(id=email.id)

    email_record_delivery_event(
        provider_message_id=sent.provider_message_id, event_type="bounced", recipient="alice@example.org",
        at=None, detail="550 no such user",
    )  # fmt: skip

    bounced = WebhookMessage.objects.get(type="email.bounced")
    assert bounced.payload["data"]["event"]["detail"] == "550 no such user"
    assert bounced.payload["data"]["event"]["recipient"] == "alice@example.org"
    assert bounced.payload["data"]["status"] == "SENT"
    assert WebhookMessage.objects.count() == 2  # email.sent, then email.bounced; none for the inactive one


def test_a_key_without_webhooks_writes_nothing(shop):
    email = _email(shop)

    email_send(email.id)

    assert Email.objects.get(id=email.id).status == "SENT"
    assert not WebhookMessage.objects.exists()


def test_the_sweep_deletes_finished_messages_after_a_week_and_keeps_pending_ones(shop):
    hook = Webhook.objects.create(api_key=shop, url="https://hooks.example.com/all")
    long_ago = timezone.now() - timedelta(days=8)
    old_delivered = WebhookMessage.objects.create(
        webhook=hook, type="email.sent", payload={}, status="delivered", created_at=long_ago
    )
    old_pending = WebhookMessage.objects.create(webhook=hook, type="email.sent", payload={}, created_at=long_ago)
    recent = WebhookMessage.objects.create(webhook=hook, type="email.sent", payload={}, status="failed")

    emails_sweep_stranded()

    assert set(WebhookMessage.objects.values_list("id", flat=True)) == {old_pending.id, recent.id}
    assert not WebhookMessage.objects.filter(id=old_delivered.id).exists()
