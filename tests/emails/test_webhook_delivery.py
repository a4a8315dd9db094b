"""Webhook delivery: each event of the outbox reaches its receiver signed per Standard Webhooks (verified here with
the `standardwebhooks` package, as a receiver would), retried on the schedule with the same webhook-id, until a
2xx; a 410 turns the webhook off; private, loopback and link-local targets are refused; a killed worker loses no
event. The receiver is a real HTTP server on loopback (tests/webhook_receiver.py)."""

import logging
import re
import time
from datetime import timedelta

import pytest
from django.db.models.functions import Now
from django.utils import timezone

from emails.models import Email, Webhook, WebhookAttempt, WebhookMessage
from emails.services import api_key_create, email_create, email_send
from emails.services.webhook_delivery import MAX_ATTEMPTS, RETRY_SCHEDULE, THREADS, webhooks_deliver_due
from infra import safe_http
from tests.conftest import make_due
from tests.emails.test_webhooks import _event, _post, _sent_via_mailgun, _signed
from tests.emails.test_webhooks import mailgun as mailgun  # the fixture: a Mailgun provider with tracking
from tests.processes import wait_for
from tests.webhook_receiver import DRIP, HANG, WebhookReceiver

FIELDS = {"from_email": "Shop <shop@example.com>", "to": ["alice@example.org"], "subject": "Hi", "text": "Hello"}


@pytest.fixture
def shop(db):
    api_key, _ = api_key_create(name="shop")
    return api_key


def _hook(api_key, receiver: WebhookReceiver, url: str | None = None, **fields) -> Webhook:
    hook = Webhook.objects.create(api_key=api_key, url=url or receiver.url, **fields)
    receiver.secret = hook.secret
    return hook


def _sent(api_key) -> Email:
    """An email sent (by the test provider) whose email.sent event is in the outbox."""
    email = email_create(api_key=api_key, **FIELDS)
    make_due(email.id)
    email_send(email.id)
    return Email.objects.get(id=email.id)


def _make_messages_due() -> None:
    """Moves every retry to now, by PostgreSQL's clock, where a test would otherwise wait out the schedule."""
    WebhookMessage.objects.filter(status=WebhookMessage.Status.PENDING).update(next_attempt_at=Now())


@pytest.mark.django_db
def test_an_event_arrives_signed_and_its_retry_after_a_500_keeps_the_webhook_id(shop, receiver):
    _hook(shop, receiver)
    email = _sent(shop)
    receiver.first_delivery_fails(500)

    assert webhooks_deliver_due() == {"retry": 1}
    message = WebhookMessage.objects.get()
    assert (message.status, message.attempts) == ("pending", 1)
    assert timedelta(seconds=3) < message.next_attempt_at - timezone.now() <= timedelta(seconds=5)
    _make_messages_due()
    assert webhooks_deliver_due() == {"delivered": 1}

    message.refresh_from_db()
    assert (message.status, message.attempts, message.lease_until) == ("delivered", 2, None)
    assert message.delivered_at is not None
    first, retry = receiver.requests
    assert not receiver.unverified(), [r.error for r in receiver.unverified()]
    assert first.webhook_id == retry.webhook_id == f"msg_{message.id.hex}"
    assert first.body == retry.body and retry.event == message.payload
    assert retry.event["type"] == "email.sent" and retry.event["data"]["id"] == str(email.id)
    assert retry.headers["content-type"] == "application/json"
    assert retry.headers["user-agent"] == "mailservice"
    assert retry.headers["webhook-signature"].startswith("v1,")
    attempts = list(message.attempts_made.order_by("at").values_list("status_code", "error"))
    assert attempts == [(500, ""), (200, "")]


@pytest.mark.django_db
def test_a_failing_receiver_is_retried_on_the_standard_webhooks_schedule_then_the_message_fails(shop, receiver):
    _hook(shop, receiver)
    _sent(shop)
    receiver.answer = lambda request: 503
    message = WebhookMessage.objects.get()

    for attempt, delay in enumerate(RETRY_SCHEDULE, start=1):
        assert webhooks_deliver_due() == {"retry": 1}
        message.refresh_from_db()
        last = message.attempts_made.latest("at")
        assert (message.status, message.attempts, last.status_code) == ("pending", attempt, 503)
        waits = (message.next_attempt_at - last.at).total_seconds()
        assert delay - 1 < waits < delay + 1, f"after attempt {attempt}: {waits}s, not {delay}s"
        assert webhooks_deliver_due() == {}, "not due before its time"
        _make_messages_due()

    assert webhooks_deliver_due() == {"failed": 1}
    message.refresh_from_db()
    assert (message.status, message.attempts) == ("failed", MAX_ATTEMPTS)
    assert len(receiver.requests) == MAX_ATTEMPTS == 8
    assert len({r.webhook_id for r in receiver.requests}) == 1
    _make_messages_due()
    assert webhooks_deliver_due() == {}


@pytest.mark.django_db
def test_a_410_turns_the_webhook_off_with_its_other_pending_messages(shop, receiver):
    hook = _hook(shop, receiver)
    _sent(shop)
    _sent(shop)
    other_key, _ = api_key_create(name="other")
    other = Webhook.objects.create(api_key=other_key, url=receiver.url + "/other")
    _sent(other_key)
    receiver.script.append(410)

    # One message a claim, oldest first: the 410, then (the hook's other message no longer pending) the other key's.
    assert webhooks_deliver_due(limit=1) == {"disabled": 1, "delivered": 1}

    hook.refresh_from_db()
    assert (hook.active, hook.disabled_reason) == (False, "The receiver answered 410 Gone.")
    assert sorted(hook.messages.values_list("status", flat=True)) == ["disabled", "disabled"]
    assert WebhookAttempt.objects.get(message__webhook=hook).status_code == 410
    assert [r.path for r in receiver.requests] == ["/hooks", "/hooks/other"]
    assert other.messages.get().status == "delivered"
    _sent(shop)
    assert not hook.messages.filter(status="pending").exists(), "a webhook that is off gets no new event"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:{port}/hooks", "http://169.254.169.254/latest/meta-data/", "http://localhost:{port}/hooks"],
    ids=["loopback", "link-local metadata", "a name resolving to loopback"],
)
def test_a_private_target_is_refused_at_delivery(shop, receiver, settings, url):
    settings.MAIL_WEBHOOK_ALLOW_PRIVATE = False
    hook = _hook(shop, receiver, url=url.format(port=receiver.port))
    _sent(shop)

    assert webhooks_deliver_due() == {"retry": 1}

    attempt = WebhookAttempt.objects.get(message__webhook=hook)
    assert attempt.status_code is None
    assert attempt.error.startswith("refused:") and "private, loopback or link-local" in attempt.error
    assert receiver.requests == []


@pytest.mark.django_db
def test_a_name_resolving_to_loopback_is_called_when_private_targets_are_allowed(shop, receiver):
    hook = _hook(shop, receiver, url=f"http://localhost:{receiver.port}/hooks")
    _sent(shop)

    assert webhooks_deliver_due() == {"delivered": 1}
    [request] = receiver.requests
    assert request.event is not None and request.headers["host"] == f"localhost:{receiver.port}"
    assert hook.messages.get().status == "delivered"


@pytest.mark.django_db
def test_a_redirect_is_not_followed(shop, receiver):
    _hook(shop, receiver)
    _sent(shop)
    receiver.script.append(302)

    assert webhooks_deliver_due() == {"retry": 1}

    assert [r.path for r in receiver.requests] == ["/hooks"]
    assert WebhookAttempt.objects.get().status_code == 302


@pytest.mark.django_db
def test_deliveries_to_one_receiver_reuse_their_connections(shop, receiver):
    _hook(shop, receiver)
    for _ in range(12):
        _sent(shop)

    assert webhooks_deliver_due() == {"delivered": 12}
    assert webhooks_deliver_due() == {}
    _sent(shop)
    assert webhooks_deliver_due() == {"delivered": 1}

    connections = {r.peer for r in receiver.requests}
    assert len(receiver.requests) == 13 and len(connections) <= THREADS


@pytest.mark.parametrize("behaviour", [HANG, DRIP])
def test_a_receiver_that_does_not_answer_is_given_up_at_the_deadline(receiver, behaviour):
    receiver.script.append(behaviour)
    started = time.monotonic()

    answer = safe_http.post(receiver.url, b"{}", {}, allow_private=True, timeout=1.5)

    assert answer == safe_http.Answer(error="timed out")
    assert 1.4 < time.monotonic() - started < 3
    assert safe_http.post(receiver.url, b"{}", {}, allow_private=True, timeout=1.5).status == 200


def test_an_unreachable_receiver_is_a_failed_attempt(receiver):
    receiver.stop()

    answer = safe_http.post(receiver.url, b"{}", {}, allow_private=True, timeout=2)

    assert answer == safe_http.Answer(error="connection refused")


@pytest.mark.django_db
def test_a_bounce_reported_by_the_provider_arrives_as_email_bounced(alice, mailgun, client, receiver):
    _hook(alice.api_key, receiver)
    email_id = _sent_via_mailgun(alice, mailgun, "bob@example.org", "20261123.9.ABC@example.com")
    bounce = _event("failed", "bob@example.org", "20261123.9.ABC@example.com", severity="permanent", reason="bounce",
                    **{"delivery-status": {"code": 550, "message": "5.1.1 No such user"}})  # fmt: skip
    assert _post(client, _signed(bounce)).status_code == 200

    assert webhooks_deliver_due() == {"delivered": 2}

    by_type = {event["type"]: event for event in receiver.events()}  # delivered side by side: in either order
    assert not receiver.unverified()
    assert sorted(by_type) == ["email.bounced", "email.sent"]
    bounced = by_type["email.bounced"]
    assert bounced["data"]["id"] == email_id and bounced["data"]["provider"] == "mailgun"
    assert bounced["data"]["event"]["type"] == "email.bounced" and "No such user" in bounced["data"]["event"]["detail"]


@pytest.mark.django_db
def test_logs_name_messages_by_id_never_the_secret_the_query_or_the_body(shop, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    hook = _hook(shop, receiver, url=receiver.url + "?token=query-secret-42")
    _sent(shop)
    receiver.first_delivery_fails(500)

    webhooks_deliver_due()
    _make_messages_due()
    webhooks_deliver_due()

    assert receiver.requests[-1].path == "/hooks?token=query-secret-42"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    message = hook.messages.get()
    assert str(message.id) in logged and str(hook.id) in logged and " 500 " in logged
    for secret in (hook.secret, hook.secret.removeprefix("whsec_"), "query-secret-42", "alice@example.org"):
        assert secret not in logged


@pytest.mark.django_db
def test_metrics_count_deliveries_by_outcome_and_show_the_outbox_age(shop, receiver, client):
    def value(text: str, name: str) -> float:
        match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    before = client.get("/metrics").content.decode()
    _hook(shop, receiver)
    _sent(shop)
    _sent(shop)
    receiver.script.extend([500, 200])
    webhooks_deliver_due()
    _sent(shop)
    WebhookMessage.objects.filter(status="pending", attempts=0).update(next_attempt_at=Now() - timedelta(seconds=30))

    text = client.get("/metrics").content.decode()

    for outcome, added in (("delivered", 1), ("retry", 1)):
        name = f'mailservice_webhook_deliveries_total{{outcome="{outcome}"}}'
        assert value(text, name) == value(before, name) + added
    assert 30 <= value(text, "mailservice_webhook_outbox_oldest_age_seconds") < 60


# --- with real processes ---------------------------------------------------------------------------------------

EMAILS = 60


@pytest.mark.django_db(transaction=True)
def test_every_email_event_arrives_despite_first_deliveries_failing_and_a_worker_killed(
    sending_to_sink, services, receiver
):
    sink = sending_to_sink
    sink.script(*["550 5.1.1 No such user"] * 5)  # some emails fail: their email.failed must arrive as well
    api_key, _ = api_key_create(name="shop")
    hook = _hook(api_key, receiver)
    receiver.first_delivery_fails(500)
    ids = [email_create(api_key=api_key, **FIELDS).id for _ in range(EMAILS)]
    for email_id in ids:
        make_due(email_id)
    processes = {"MAIL_WEBHOOK_ALLOW_PRIVATE": "1", "MAIL_LEASE_SECONDS": "3", "MAIL_SWEEP_INTERVAL": "1"}

    first = services.worker(queues="celery,webhooks", **processes)
    wait_for(lambda: len(sink.received) >= EMAILS // 3, timeout=60, what="the worker to be sending")
    first.kill()  # between status changes and their deliveries: the first deliveries are still to come
    changed = Email.objects.filter(id__in=ids, status__in=["SENT", "FAILED"]).count()
    delivered = WebhookMessage.objects.filter(status="delivered").count()
    assert changed > delivered, f"the kill must land before every event of a changed email is delivered: {changed}"
    # The dead worker's claims: taken back now, where the test would otherwise wait out their lease.
    WebhookMessage.objects.update(lease_until=None)

    services.worker(queues="celery,webhooks", **processes)
    services.beat(**processes)

    def all_delivered() -> bool:
        # A message whose claim died with the worker counted that try, so its first 500 waits the schedule's
        # second step (5 min): brought forward, as make_due does for emails.
        WebhookMessage.objects.filter(status="pending", lease_until=None).update(next_attempt_at=Now())
        return WebhookMessage.objects.filter(webhook=hook, status="delivered").count() == EMAILS

    wait_for(all_delivered, timeout=120, what="every email's event to be delivered")

    assert not receiver.unverified(), [r.error for r in receiver.unverified()]
    final = dict(Email.objects.filter(id__in=ids).values_list("id", "status"))
    assert set(final.values()) == {"SENT", "FAILED"}
    by_email = {}
    for event in receiver.events():
        by_email.setdefault(event["data"]["id"], set()).add(event["type"])
    assert by_email == {str(i): {f"email.{final[i].lower()}"} for i in ids}
    by_id: dict[str, list[int | str]] = {}
    for request in receiver.requests:
        by_id.setdefault(request.webhook_id, []).append(request.answered)
    assert len(by_id) == EMAILS
    assert all(answers[0] == 500 and answers[-1] == 200 for answers in by_id.values()), "a retry kept its id"


def test_a_message_whose_every_claim_was_lost_ends_failed_and_is_not_claimed_for_ever(shop, receiver):
    # A worker that died (or hung past the lease) on each of its claims: the claims counted as attempts.
    _hook(shop, receiver)
    _sent(shop)
    message = WebhookMessage.objects.get()
    WebhookMessage.objects.filter(id=message.id).update(
        attempts=MAX_ATTEMPTS, lease_until=timezone.now() - timedelta(seconds=1)
    )

    webhooks_deliver_due()

    message.refresh_from_db()
    assert (message.status, message.attempts) == ("failed", MAX_ATTEMPTS)
    assert receiver.requests == []
