"""Test keys (`create_api_key NAME --test`): a client's CI runs the whole pipeline (validation, templates, statuses,
webhooks) through a real worker, and no email leaves the building: each ends SENT by the built-in `test` provider.
Its stats and the dashboard tell such emails apart."""

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from rest_framework.test import APIClient

from emails.models import ApiKey, Email, Template, Webhook
from emails.services import api_key_create, email_create, email_send
from tests.conftest import email_payload, make_due
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)  # the worker sees only committed rows

FIELDS = {"from_email": "Shop <shop@example.com>", "to": ["alice@example.org"], "subject": "Hi", "text": "Hello"}


def test_a_test_keys_email_ends_sent_by_test_reaches_no_sink_and_its_webhook_fires(sending_to_sink, services, receiver):
    out = io.StringIO()
    call_command("create_api_key", "shop-ci", "--test", stdout=out, stderr=io.StringIO())
    assert "A test key" in out.getvalue()
    api_key = ApiKey.objects.get(name="shop-ci")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {out.getvalue().strip().splitlines()[-1]}")
    hook = Webhook.objects.create(api_key=api_key, url=receiver.url)
    receiver.secret = hook.secret
    Template.objects.create(api_key=api_key, name="welcome", subject="Welcome {{ name }}", text="Hello {{ name }}")
    refused = client.post("/api/v1/emails", email_payload(to=["not an address"]), format="json")
    assert refused.status_code == 400 and "to" in refused.json()  # validated as a live key's email is

    payload = email_payload(template="welcome", context={"name": "Ada"})
    del payload["subject"], payload["text"]
    email_id = client.post("/api/v1/emails", payload, format="json").json()["id"]
    services.worker(queues="celery,webhooks", MAIL_WEBHOOK_ALLOW_PRIVATE="1")
    wait_for(lambda: len(receiver.requests) == 1, timeout=60, what="the email.sent webhook")

    email = Email.objects.get(id=email_id)
    assert (email.status, email.provider, email.test, email.subject) == ("SENT", "test", True, "Welcome Ada")
    assert sending_to_sink.received == []
    (delivered,) = receiver.requests
    assert not receiver.unverified()
    assert (delivered.event["type"], delivered.event["data"]["id"], delivered.event["data"]["provider"]) == (
        "email.sent", email_id, "test",
    )  # fmt: skip
    stats = client.get("/api/v1/stats").json()
    assert (stats["test_key"], stats["counts"]["SENT"]) == (True, 1)


def test_the_dashboard_lists_test_emails_apart_from_the_real_providers_sends(client, sending_to_sink):
    client.force_login(User.objects.create_user("operator", password="pw", is_staff=True))
    assert "test" not in [p["name"] for p in client.get("/dashboard/data").json()["providers"]]
    api_key, _ = api_key_create(name="shop-ci", test=True)
    email = email_create(api_key=api_key, **FIELDS)
    make_due(email.id)
    email_send(email.id)

    (listed,) = [p for p in client.get("/dashboard/data").json()["providers"] if p["name"] == "test"]
    assert (listed["backend"], listed["sent_last_minute"]) == ("test keys' emails: never sent", 1)
    assert sending_to_sink.received == []
