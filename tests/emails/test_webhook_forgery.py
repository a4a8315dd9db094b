"""Forged tracking webhooks, replayed as they were found: an unauthenticated Postmark HardBounce that
suppressed an address for every tenant, an event naming a real message id (over SMTP, the Message-ID every
recipient sees) with someone else as its recipient, and anymail's inbound routes. The service sends over
SMTP (the sink) with Postmark configured as its fallback, so Postmark's tracking route is one an attacker
would try."""

import base64
import json
import logging

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from emails.models import Email, EmailEvent, Suppression
from emails.services import email_send, emails_send
from tests.conftest import email_payload
from tests.emails.webhook_routes import webhooks_configured

pytestmark = pytest.mark.django_db

SECRET = "postmark:webhook-secret"
POSTMARK = {"name": "postmark", "backend": "postmark", "options": {"server_token": "server-token"}, "priority": 2}
TRACKING = "/webhooks/postmark/tracking/"


@pytest.fixture
def with_secret(sending_to_sink):
    with webhooks_configured(providers=[sending_to_sink.provider(), POSTMARK], secret=SECRET):
        yield sending_to_sink


@pytest.fixture
def without_secret(sending_to_sink):
    with webhooks_configured(providers=[sending_to_sink.provider(), POSTMARK], secret=None):
        yield sending_to_sink


def _sent(client, sink, to: str) -> tuple[str, str]:
    """Sends an email of `client`'s key to `to` through the sink; returns its id and the Message-ID its
    recipient sees (what a recipient could put in a forged event)."""
    email_id = client.post("/api/v1/emails", email_payload(to=[to]), format="json").json()["id"]
    email_send(email_id)
    assert Email.objects.get(id=email_id).status == "SENT"
    (received,) = [r for r in sink.received if r.email_id == email_id]
    return email_id, received.message["Message-ID"]


def _hard_bounce(message_id: str, address: str) -> dict:
    """Postmark's bounce webhook, as its documentation shows it."""
    return {
        "RecordType": "Bounce",
        "ID": 4323372036854775807,
        "Type": "HardBounce",
        "TypeCode": 1,
        "Name": "Hard bounce",
        "MessageID": message_id,
        "Metadata": {},
        "ServerID": 23,
        "MessageStream": "outbound",
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": address,
        "From": "shop@example.com",
        "BouncedAt": "2026-11-23T16:33:54.9070259Z",
        "DumpAvailable": False,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Your order",
    }


def _post(client, path: str, body: dict, auth: str | None = SECRET):
    headers = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    return client.post(path, json.dumps(body), content_type="application/json", **headers)


def _event_types(email_id: str) -> list[str]:
    return sorted(EmailEvent.objects.filter(email_id=email_id).values_list("type", flat=True))


def test_a_forged_hard_bounce_without_the_secret_is_a_404_and_suppresses_nothing(alice, without_secret, client):
    email_id, message_id = _sent(alice, without_secret, "carol@example.org")

    response = _post(client, TRACKING, _hard_bounce(message_id, "carol@example.org"), auth=None)

    assert response.status_code == 404
    assert not Suppression.objects.exists()
    assert _event_types(email_id) == ["sent"]


@pytest.mark.parametrize("auth", [None, SECRET], ids=["no auth", "the secret"])
@pytest.mark.parametrize("path", ["/webhooks/postmark/tracking/", "/webhooks/mailgun/tracking/", "/webhooks/mandrill/"])
def test_no_webhook_route_exists_without_the_secret(without_secret, client, path, auth):
    assert _post(client, path, _hard_bounce("<x@example.com>", "carol@example.org"), auth=auth).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/webhooks/postmark/inbound/",
        "/webhooks/mailgun/inbound/",
        "/webhooks/mailgun/inbound_mime/",
        "/webhooks/sendgrid/inbound/",
        "/webhooks/amazon_ses/inbound/",
    ],
)
def test_inbound_routes_are_404_even_with_the_secret(with_secret, client, path):
    inbound = {"FromFull": {"Email": "mallory@example.net"}, "To": "support@example.com", "TextBody": "hi"}

    assert _post(client, path, inbound).status_code == 404


@pytest.mark.parametrize("path", ["/webhooks/mailgun/tracking/", "/webhooks/sendgrid/tracking/", "/webhooks/mandrill/"])
def test_tracking_routes_of_providers_not_configured_are_404_even_with_the_secret(with_secret, client, path):
    assert _post(client, path, _hard_bounce("<x@example.com>", "carol@example.org")).status_code == 404


def test_a_forged_hard_bounce_with_a_wrong_secret_is_refused(alice, with_secret, client):
    email_id, message_id = _sent(alice, with_secret, "carol@example.org")

    response = _post(client, TRACKING, _hard_bounce(message_id, "carol@example.org"), auth="postmark:guess")

    assert response.status_code == 400  # anymail's answer to a failed validation
    assert not Suppression.objects.exists()
    assert _event_types(email_id) == ["sent"]


def test_a_bounce_for_a_real_message_id_but_another_recipient_changes_nothing(alice, with_secret, client, caplog):
    # carol got the email and read its Message-ID; she names a victim of hers as the bounced address.
    email_id, message_id = _sent(alice, with_secret, "carol@example.org")

    with caplog.at_level(logging.INFO):
        response = _post(client, TRACKING, _hard_bounce(message_id, "victim@example.net"))

    assert response.status_code == 200  # anymail acknowledges what it parsed; nothing of it is applied
    assert not Suppression.objects.exists()
    assert _event_types(email_id) == ["sent"]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert email_id in logged and "ignored" in logged
    assert "victim@example.net" not in logged and "carol@example.org" not in logged


def test_a_bounce_for_an_unknown_message_id_changes_nothing(alice, with_secret, client):
    email_id, _ = _sent(alice, with_secret, "carol@example.org")

    assert _post(client, TRACKING, _hard_bounce("<guessed@example.com>", "carol@example.org")).status_code == 200

    assert not Suppression.objects.exists()
    assert _event_types(email_id) == ["sent"]


def test_a_bounce_naming_a_message_id_copied_by_another_key_changes_neither_email(alice, bob, with_secret, client):
    # Over SMTP the message id is the Message-ID header, which a client may set: alice copies bob's.
    bobs, message_id = _sent(bob, with_secret, "carol@example.org")
    payload = email_payload(to=["carol@example.org"], headers={"Message-ID": message_id})
    alices = alice.post("/api/v1/emails", payload, format="json").json()["id"]
    email_send(alices)
    assert Email.objects.get(id=alices).provider_message_id == message_id

    assert _post(client, TRACKING, _hard_bounce(message_id, "carol@example.org")).status_code == 200

    assert not Suppression.objects.exists()  # the event cannot say whose email bounced
    assert _event_types(bobs) == _event_types(alices) == ["sent"]


def test_bobs_email_bouncing_suppresses_the_address_for_bob_only(alice, bob, with_secret, client):
    bobs, message_id = _sent(bob, with_secret, "Carol <Carol@Example.org>")

    assert _post(client, TRACKING, _hard_bounce(message_id, "Carol@Example.org")).status_code == 200

    suppression = Suppression.objects.get()
    assert (suppression.api_key, suppression.address, str(suppression.email_id)) == (
        bob.api_key,
        "carol@example.org",
        bobs,
    )
    assert _event_types(bobs) == ["bounced", "sent"]

    alices = alice.post("/api/v1/emails", email_payload(to=["carol@example.org"]), format="json").json()["id"]
    bobs_next = bob.post("/api/v1/emails", email_payload(to=["carol@example.org"]), format="json").json()["id"]
    emails_send([alices, bobs_next])  # one batch: each email is matched with its own key's suppressions

    assert Email.objects.get(id=alices).status == "SENT"
    assert with_secret.count_by_id()[alices] == 1
    bobs_email = Email.objects.get(id=bobs_next)
    assert (bobs_email.status, bobs_email.last_error) == ("FAILED", "suppressed")
    assert with_secret.count_by_id()[bobs_next] == 0


def test_a_suppression_for_every_key_leaves_the_address_out_of_every_keys_emails(alice, bob, sending_to_sink):
    Suppression.objects.create(api_key=None, address="carol@example.org", reason="manual")
    Suppression.objects.create(api_key=alice.api_key, address="dave@example.org", reason="bounced")
    emails = [
        client.post("/api/v1/emails", email_payload(to=["carol@example.org", "dave@example.org"]), format="json")
        for client in (alice, bob)
    ]
    alices, bobs = (response.json()["id"] for response in emails)

    emails_send([alices, bobs])

    received = {r.email_id: sorted(r.rcpt_tos) for r in sending_to_sink.received}
    assert received == {bobs: ["dave@example.org"]}
    assert (Email.objects.get(id=alices).status, Email.objects.get(id=alices).last_error) == ("FAILED", "suppressed")
    assert EmailEvent.objects.get(email_id=bobs, type="suppressed").detail == "carol@example.org"


def test_a_batch_of_many_keys_reads_its_suppressions_in_one_query(alice, bob, sending_to_sink):
    Suppression.objects.create(api_key=bob.api_key, address="carol@example.org", reason="bounced")
    ids = [
        client.post("/api/v1/emails", email_payload(to=["carol@example.org"]), format="json").json()["id"]
        for client in (alice, bob) * 10
    ]

    with CaptureQueriesContext(connection) as queries:
        emails_send(ids)

    assert sum(Suppression._meta.db_table in q["sql"] for q in queries.captured_queries) == 1
    assert sorted(Email.objects.filter(id__in=ids).values_list("status", flat=True)) == ["FAILED"] * 10 + ["SENT"] * 10


def test_a_refusal_while_sending_suppresses_nothing(alice, sending_to_sink):
    sending_to_sink.script_command("RCPT", "550 5.1.1 Mailbox does not exist")
    refused = alice.post("/api/v1/emails", email_payload(to=["carol@example.org"]), format="json").json()["id"]

    email_send(refused)

    assert Email.objects.get(id=refused).status == "FAILED"
    assert not Suppression.objects.exists()
    later = alice.post("/api/v1/emails", email_payload(to=["carol@example.org"]), format="json").json()["id"]
    email_send(later)
    assert Email.objects.get(id=later).status == "SENT"


def test_a_webhook_body_nested_100000_deep_is_a_400_not_a_500(with_secret, client):
    auth = "Basic " + base64.b64encode(SECRET.encode()).decode()
    for body in ("[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000):
        response = client.post(TRACKING, body, content_type="application/json", HTTP_AUTHORIZATION=auth)

        assert response.status_code == 400
        assert response.json() == {"detail": "JSON nested deeper than 32 levels."}


@pytest.mark.parametrize("written", ['"carol"@example.org', "Carol@EXAMPLE.org", "carol@\uff45xample.org"])
def test_a_suppressed_mailbox_written_another_way_is_still_left_out(alice, sending_to_sink, written):
    # \uff45 is a full-width "e": IDNA maps it to "e", as the SMTP envelope would carry it.
    expected = "carol@example.org"
    Suppression.objects.create(api_key=alice.api_key, address=expected, reason="bounced")
    email_id = alice.post("/api/v1/emails", email_payload(to=[written]), format="json").json()["id"]

    email_send(email_id)

    assert sending_to_sink.received == []
    assert (Email.objects.get(id=email_id).status, Email.objects.get(id=email_id).last_error) == (
        "FAILED",
        "suppressed",
    )


def test_a_bounce_reported_for_the_punycode_form_of_an_international_address_suppresses_it(alice, with_secret, client):
    email_id, message_id = _sent(alice, with_secret, "carol@b\u00fccher.example")

    response = _post(client, TRACKING, _hard_bounce(message_id, "carol@xn--bcher-kva.example"))

    assert response.status_code == 200
    assert "bounced" in _event_types(email_id)
    assert Suppression.objects.filter(api_key=alice.api_key, address="carol@xn--bcher-kva.example").exists()
