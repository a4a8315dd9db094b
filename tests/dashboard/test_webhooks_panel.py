"""The dashboard's webhooks panel: each webhook with its key, its receiver's host (never the URL's path or query),
whether it is active, its latest delivery and its failed attempts of the last 24 hours; read in queries that do
not grow with the webhooks or their deliveries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from emails.models import Webhook, WebhookAttempt, WebhookMessage
from emails.services import api_key_create
from emails.services.webhooks import webhook_delete

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop():
    return api_key_create(name="shop")[0]


def _attempts(webhook: Webhook, *outcomes: tuple[timedelta, int | None]) -> None:
    """One message with an attempt per (age, status code); no status code: no answer."""
    now = timezone.now()
    message = WebhookMessage.objects.create(webhook=webhook, type="email.sent", payload={})
    WebhookAttempt.objects.bulk_create(
        WebhookAttempt(message=message, at=now - age, status_code=code, error="" if code else "timed out")
        for age, code in outcomes
    )


def test_it_shows_each_webhook_with_its_key_host_latest_delivery_and_failures_of_the_day(operator, shop):
    webhook = Webhook.objects.create(api_key=shop, url="https://hooks.example.com:8443/in?token=s3cret")
    _attempts(
        webhook,
        (timedelta(hours=30), 500),  # failed, but not in the last 24 hours
        (timedelta(hours=2), None),
        (timedelta(minutes=5), 503),
        (timedelta(minutes=1), 204),
    )
    gone = Webhook.objects.create(api_key=shop, url="https://gone.example.com/")
    Webhook.objects.create(api_key=shop, url="https://off.example.com/", active=False, disabled_reason="410 Gone")
    webhook_delete(webhook=gone)

    shown = operator.get("/dashboard/data").json()["webhooks"]

    off, first = shown
    assert first["target"] == "https://hooks.example.com:8443"
    assert first["api_key"].startswith("shop (ms_")
    assert (first["active"], first["failures_last_day"]) == (True, 2)
    assert first["last_delivery"]["status_code"] == 204
    assert (off["target"], off["active"], off["disabled_reason"], off["last_delivery"]) == (
        "https://off.example.com", False, "410 Gone", None,
    )  # fmt: skip
    page = operator.get("/dashboard/").content.decode()
    assert "https://hooks.example.com:8443" in page and "s3cret" not in page and "gone.example.com" not in page


def test_the_panel_says_when_there_are_no_webhooks(operator):
    assert operator.get("/dashboard/data").json()["webhooks"] == []
    assert "No webhooks." in operator.get("/dashboard/").content.decode()


def test_its_queries_do_not_grow_with_webhooks_or_deliveries(operator, shop):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert operator.get("/dashboard/data").status_code == 200
        return len(captured)

    _attempts(Webhook.objects.create(api_key=shop, url="https://a.example.com/"), (timedelta(minutes=1), 200))
    few = queries()
    for n in range(10):
        webhook = Webhook.objects.create(api_key=api_key_create(name=f"k{n}")[0], url=f"https://{n}.example.com/")
        for _ in range(3):
            _attempts(webhook, (timedelta(minutes=3), None), (timedelta(minutes=2), 500), (timedelta(minutes=1), 200))

    assert queries() == few
