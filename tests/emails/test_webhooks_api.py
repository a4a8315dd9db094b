"""The webhooks API: a key makes, lists, reads and deletes its webhooks and reads their deliveries; the secret is
shown once; URLs this service must not call are refused naming `url`; another key sees none of it, and its
emails' events never reach this key's webhooks."""

from datetime import timedelta

import pytest
from django.utils import timezone

from emails.models import WEBHOOK_EVENTS, Webhook, WebhookAttempt, WebhookMessage
from emails.services import email_create, email_send
from tests.conftest import make_due

pytestmark = pytest.mark.django_db

# Public addresses, given as such: the tests' machine may resolve no name at all. Nothing is delivered here.
RECEIVER = "https://93.184.215.14/hooks/mail"
OTHER_RECEIVER = "http://1.1.1.1:8080/other?token=t"


def _create(client, **body):
    return client.post("/api/v1/webhooks", {"url": RECEIVER, **body}, format="json")


def test_it_makes_a_webhook_and_shows_its_secret_once(alice):
    response = _create(alice, events=["email.sent", "email.bounced"])

    assert response.status_code == 201
    made = response.json()
    assert made["secret"].startswith("whsec_") and len(made["secret"]) > 40
    assert (made["url"], made["events"], made["active"]) == (RECEIVER, ["email.sent", "email.bounced"], True)
    assert response["Location"] == f"/api/v1/webhooks/{made['id']}"
    assert Webhook.objects.get(id=made["id"]).secret == made["secret"]
    shown = alice.get(f"/api/v1/webhooks/{made['id']}").json()
    assert "secret" not in shown and made["secret"] not in str(shown)
    assert "secret" not in alice.get("/api/v1/webhooks").json()["results"][0]
    assert shown == {key: value for key, value in made.items() if key != "secret"} | {"disabled_reason": ""}


def test_a_webhook_without_events_is_told_of_every_event(alice):
    every = _create(alice).json()
    failures_only = _create(alice, url=OTHER_RECEIVER, events=["email.failed"]).json()

    _send(alice.api_key)

    assert every["events"] == []
    assert [m.type for m in WebhookMessage.objects.filter(webhook_id=every["id"])] == ["email.sent"]
    assert not WebhookMessage.objects.filter(webhook_id=failures_only["id"]).exists()


def test_the_list_holds_the_keys_webhooks_newest_first(alice):
    first = _create(alice).json()["id"]
    second = _create(alice, url=OTHER_RECEIVER).json()["id"]

    response = alice.get("/api/v1/webhooks")

    assert response.status_code == 200
    assert [webhook["id"] for webhook in response.json()["results"]] == [second, first]


def test_a_deleted_webhook_is_gone_and_its_waiting_events_are_never_sent(alice):
    made = _create(alice).json()
    webhook = Webhook.objects.get(id=made["id"])
    waiting = WebhookMessage.objects.create(webhook=webhook, type="email.sent", payload={"type": "email.sent"})
    done = WebhookMessage.objects.create(
        webhook=webhook, type="email.sent", payload={}, status=WebhookMessage.Status.DELIVERED
    )

    response = alice.delete(f"/api/v1/webhooks/{made['id']}")

    assert response.status_code == 204
    assert alice.get(f"/api/v1/webhooks/{made['id']}").status_code == 404
    assert alice.get("/api/v1/webhooks").json()["results"] == []
    assert alice.delete(f"/api/v1/webhooks/{made['id']}").status_code == 404
    waiting.refresh_from_db(), done.refresh_from_db()
    assert (waiting.status, done.status) == (WebhookMessage.Status.DISABLED, WebhookMessage.Status.DELIVERED)
    assert not Webhook.objects.get(id=made["id"]).active


def test_a_deleted_webhook_hears_of_no_new_email(alice):
    made = _create(alice).json()
    alice.delete(f"/api/v1/webhooks/{made['id']}")

    _send(alice.api_key)

    assert not WebhookMessage.objects.exists()


def test_deliveries_list_each_attempt_newest_first(alice):
    made = _create(alice).json()
    webhook = Webhook.objects.get(id=made["id"])
    message = WebhookMessage.objects.create(webhook=webhook, type="email.sent", payload={}, attempts=2)
    now = timezone.now()
    WebhookAttempt.objects.create(message=message, at=now - timedelta(seconds=10), error="timed out after 10 s")
    WebhookAttempt.objects.create(message=message, at=now, status_code=200)

    response = alice.get(f"/api/v1/webhooks/{made['id']}/deliveries")

    assert response.status_code == 200
    latest, earlier = response.json()["results"]
    assert latest["message_id"] == earlier["message_id"] == f"msg_{message.id.hex}"
    assert (latest["event"], latest["status_code"], latest["error"]) == ("email.sent", 200, "")
    assert (earlier["status_code"], earlier["error"]) == (None, "timed out after 10 s")
    assert latest["at"] > earlier["at"]
    assert len(alice.get(f"/api/v1/webhooks/{made['id']}/deliveries?limit=1").json()["results"]) == 1


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=", "page=2"])
def test_a_bad_deliveries_query_is_refused_naming_it(alice, query):
    made = _create(alice).json()

    response = alice.get(f"/api/v1/webhooks/{made['id']}/deliveries?{query}")

    assert response.status_code == 400
    assert list(response.json()) == [query.partition("=")[0]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": ["email.sent", "email.exploded"]}, "events"),
        ({"events": ["email.sent", "email.sent"]}, "events"),
        ({"events": [*WEBHOOK_EVENTS, "email.sent"]}, "events"),
        ({"events": "email.sent"}, "events"),
        ({"url": "ftp://93.184.215.14/"}, "url"),
        ({"url": "https://93.184.215.14/" + "a" * 2000}, "url"),
        ({"url": "https://user:pw@93.184.215.14/"}, "url"),
        ({"url": "https://[nothing/"}, "url"),
        ({"url": "https://bücher.example/hook"}, "url"),
        ({"url": None}, "url"),
        ({"colour": "blue"}, "colour"),
    ],
    ids=[
        "unknown-event",
        "repeated-event",
        "nine-events",
        "events-not-a-list",
        "ftp",
        "too-long",
        "credentials",
        "bad-brackets",
        "non-ascii-host",
        "null",
        "unknown-field",
    ],
)
def test_a_bad_webhook_is_refused_naming_the_field(alice, body, field):
    response = _create(alice, **body)

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert not Webhook.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://localhost/hook",
        "https://hooks.does-not-resolve.invalid/hook",
    ],
    ids=["loopback", "private-10", "private-192", "metadata", "ipv6-loopback", "localhost", "unresolvable"],
)
def test_a_url_this_service_must_not_call_is_refused_naming_url(alice, url):
    response = _create(alice, url=url)

    assert response.status_code == 400
    assert list(response.json()) == ["url"]
    assert not Webhook.objects.exists()


def test_loopback_receivers_are_allowed_where_private_targets_are(alice, settings):
    settings.MAIL_WEBHOOK_ALLOW_PRIVATE = True

    for url in ("http://127.0.0.1:8000/hook", "http://localhost:9000/hook"):
        assert _create(alice, url=url).status_code == 201, url
    assert _create(alice, url="https://hooks.does-not-resolve.invalid/").status_code == 400


def test_a_key_has_at_most_20_webhooks(alice, bob):
    for _ in range(20):
        assert _create(alice).status_code == 201

    response = _create(alice)

    assert response.status_code == 400
    assert "at most 20" in response.json()["non_field_errors"][0]
    assert _create(bob).status_code == 201  # per key
    alice.delete(f"/api/v1/webhooks/{Webhook.objects.filter(api_key=alice.api_key).first().id}")
    assert _create(alice).status_code == 201


def test_another_key_cannot_see_delete_or_read_the_deliveries_of_a_webhook(alice, bob):
    made = _create(alice).json()
    webhook = Webhook.objects.get(id=made["id"])
    WebhookAttempt.objects.create(
        message=WebhookMessage.objects.create(webhook=webhook, type="email.sent", payload={}), status_code=200
    )

    assert bob.get(f"/api/v1/webhooks/{made['id']}").status_code == 404
    assert bob.get(f"/api/v1/webhooks/{made['id']}/deliveries").status_code == 404
    assert bob.delete(f"/api/v1/webhooks/{made['id']}").status_code == 404
    assert bob.get("/api/v1/webhooks").json()["results"] == []
    assert alice.get(f"/api/v1/webhooks/{made['id']}").json()["active"] is True


def test_another_keys_emails_never_reach_a_keys_webhooks(alice, bob):
    alices = _create(alice).json()["id"]
    bobs = _create(bob, url=OTHER_RECEIVER).json()["id"]

    sent = _send(bob.api_key)

    assert not WebhookMessage.objects.filter(webhook_id=alices).exists()
    [message] = WebhookMessage.objects.filter(webhook_id=bobs)
    assert (message.email_id, message.type) == (sent.id, "email.sent")


def test_without_a_key_nothing_answers(client):
    assert client.get("/api/v1/webhooks").status_code == 401
    assert client.post("/api/v1/webhooks", {"url": RECEIVER}, content_type="application/json").status_code == 401
    assert not Webhook.objects.exists()


def _send(api_key):
    email = email_create(
        api_key=api_key, from_email="shop@example.com", to=["alice@example.org"], subject="Hi", text="Hello"
    )
    make_due(email.id)
    email_send(email.id)
    return email


def test_operators_see_webhooks_and_their_messages_in_the_admin_never_the_secret(alice, admin_client):
    made = _create(alice).json()
    webhook = Webhook.objects.get(id=made["id"])
    message = WebhookMessage.objects.create(webhook=webhook, type="email.sent", payload={"type": "email.sent"})
    WebhookAttempt.objects.create(message=message, status_code=503)

    for page in (
        "/admin/emails/webhook/",
        f"/admin/emails/webhook/{webhook.id}/change/",
        "/admin/emails/webhookmessage/",
        f"/admin/emails/webhookmessage/{message.id}/change/",
    ):
        response = admin_client.get(page)
        assert response.status_code == 200, page
        assert made["secret"] not in response.content.decode(), page
    assert "503" in admin_client.get(f"/admin/emails/webhookmessage/{message.id}/change/").content.decode()
    assert admin_client.get("/admin/emails/webhook/add/").status_code == 403
