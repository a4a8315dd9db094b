"""Bulk retry: POST /api/v1/emails/retry sends the key's FAILED emails matching its filters again, each once, and
no other email: not another key's, not one of another status, not one whose every recipient is suppressed."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import Count

from emails.models import ApiKey, Email, EmailEvent
from emails.services import email_create
from tests.processes import wait_for

pytestmark = pytest.mark.django_db

DAY = datetime(2026, 11, 23, tzinfo=UTC)


def _failed(api_key: ApiKey, count: int, **columns) -> list[str]:
    """`count` FAILED emails of the key, stored at once (as workers would have left them)."""
    model = email_create(
        api_key=api_key, from_email="shop@example.com", to=["alice@example.org"], subject="Hi", text="Hello"
    )
    Email.objects.filter(id=model.id).delete()
    values = {f.attname: getattr(model, f.attname) for f in Email._meta.concrete_fields if f.attname != "id"}
    values.update(status="FAILED", attempts=5, provider="mailgun", last_error="421 try again later", created_at=DAY)
    values.update(columns)
    emails = Email.objects.bulk_create(Email(id=uuid.uuid4(), **values) for _ in range(count))
    return sorted(str(email.id) for email in emails)


def _retry(client, **body):
    return client.post("/api/v1/emails/retry", {"status": "FAILED", **body}, format="json")


def _pending(api_key: ApiKey) -> list[str]:
    return sorted(str(i) for i in Email.objects.filter(api_key=api_key, status="PENDING").values_list("id", flat=True))


def test_a_retried_email_is_pending_with_fresh_attempts_and_says_why(alice):
    [email_id] = _failed(alice.api_key, 1)

    response = _retry(alice)

    assert (response.status_code, response.json()) == (202, {"count": 1})
    email = Email.objects.get(id=email_id)
    assert (email.status, email.attempts, email.last_error) == ("PENDING", 0, "")
    events = alice.get(f"/api/v1/emails/{email_id}").json()["events"]
    assert [(e["type"], e["detail"]) for e in events] == [("retried", "retried through the API")]


def test_only_the_keys_failed_emails_are_retried_and_suppressed_ones_stay_failed(alice, bob):
    failed = _failed(alice.api_key, 3)
    _failed(alice.api_key, 2, last_error="suppressed")
    _failed(alice.api_key, 2, status="SENT", last_error="")
    _failed(bob.api_key, 2)

    assert _retry(alice).json() == {"count": 3}

    assert _pending(alice.api_key) == failed
    assert Email.objects.filter(api_key=alice.api_key, status="FAILED", last_error="suppressed").count() == 2
    assert Email.objects.filter(api_key=bob.api_key, status="FAILED").count() == 2


@pytest.mark.parametrize(
    ("filters", "matching"),
    [
        ({"created_after": "2026-11-23T12:00:00Z"}, "late"),
        ({"created_before": "2026-11-23T01:30:00"}, "early"),  # without a zone: UTC
        ({"provider": "sendgrid"}, "sendgrid"),
        ({"error_contains": "MAILBOX FULL"}, "full"),
    ],
)
def test_each_filter_chooses_the_emails_retried(alice, filters, matching):
    emails = {
        "early": _failed(alice.api_key, 2, created_at=DAY + timedelta(hours=1)),
        "late": _failed(alice.api_key, 2, created_at=DAY + timedelta(hours=13)),
        "sendgrid": _failed(alice.api_key, 2, provider="sendgrid", created_at=DAY + timedelta(hours=2)),
        "full": _failed(alice.api_key, 2, last_error="452 4.2.2 Mailbox full", created_at=DAY + timedelta(hours=3)),
    }

    assert _retry(alice, **filters).json() == {"count": 2}

    assert _pending(alice.api_key) == emails[matching]


def test_filters_combine(alice):
    _failed(alice.api_key, 2, provider="sendgrid")
    both = _failed(alice.api_key, 2, provider="sendgrid", last_error="timed out")
    _failed(alice.api_key, 2, last_error="timed out")

    assert _retry(alice, provider="sendgrid", error_contains="timed").json() == {"count": 2}
    assert _pending(alice.api_key) == both


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"status": "SENT"}, "status"),
        ({"status": None}, "status"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"colour": "red"}, "colour"),
        ({"error_contains": "a\x00b"}, "error_contains"),
    ],
)
def test_a_bad_request_is_refused_naming_the_field_and_retries_nothing(alice, body, named):
    _failed(alice.api_key, 1)

    response = _retry(alice, **body)

    assert response.status_code == 400
    assert named in response.json()
    assert _pending(alice.api_key) == []


def test_status_is_required(alice):
    _failed(alice.api_key, 1)

    response = alice.post("/api/v1/emails/retry", {}, format="json")

    assert (response.status_code, list(response.json())) == (400, ["status"])


@pytest.mark.django_db(transaction=True)
def test_two_thousand_failed_emails_are_retried_and_each_delivered_once(alice, bob, sending_to_sink, services):
    """Several chunks, then one real worker, which sends each retried email exactly once."""
    retried = _failed(alice.api_key, 2000, provider="sink", last_error="421 too many connections")
    _failed(alice.api_key, 5, provider="sink", last_error="suppressed")
    _failed(bob.api_key, 5, provider="sink")

    assert _retry(alice).json() == {"count": 2000}
    services.worker()

    wait_for(lambda: len(sending_to_sink.received) >= 2000, timeout=240, what="2,000 retried emails at the sink")
    counts = sending_to_sink.count_by_id()
    assert sorted(counts) == retried and set(counts.values()) == {1}
    # A send's outcome is written after the sink has the message: wait for the last group's write.
    wait_for(lambda: not Email.objects.filter(status__in=["PENDING", "PROCESSING"]).exists(), timeout=60,
             what="every retried email's outcome written")  # fmt: skip
    by_status = dict(Email.objects.values_list("status").annotate(n=Count("id")).order_by())
    assert by_status == {"SENT": 2000, "FAILED": 10}
    assert EmailEvent.objects.filter(type="retried").count() == 2000


def test_a_repeated_idempotency_key_answers_the_first_count(alice):
    _failed(alice.api_key, 3)
    first = alice.post("/api/v1/emails/retry", {"status": "FAILED"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    Email.objects.filter(api_key=alice.api_key).update(status="FAILED")

    again = alice.post("/api/v1/emails/retry", {"status": "FAILED"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")

    assert (first.json(), again.json(), again["Idempotent-Replayed"]) == ({"count": 3}, {"count": 3}, "true")
    assert _pending(alice.api_key) == []
