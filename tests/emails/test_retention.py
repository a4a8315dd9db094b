"""Retention, off unless configured: final emails lose their content after MAIL_RETENTION_DAYS and their rows
after MAIL_DELETE_AFTER_DAYS, exactly those and no others, in bounded batches; the API shows an erased email as
such."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from emails.models import Email, EmailEvent
from emails.services import email_create, emails_apply_retention
from tests.conftest import email_payload

pytestmark = pytest.mark.django_db

EMAILS = 10_800  # 1,200 of each (status, age)
# Each generated email's age in days and status cycle through these, so that every combination is there.
AGES = [1, 40, 100]  # days since created and last changed
STATUSES = ["SENT", "FAILED", "PENDING"]


def _generate(count: int) -> None:
    """`count` emails (with content and one event each), created and last changed AGES[i % 3] days ago, with
    status STATUSES[(i // 3) % 3]: one row made by the service, copied in SQL (the service would take minutes)."""
    fields = email_payload(subject="Your order 42", html="<p>Thank you</p>", headers={"X-Order": "42"})
    fields["attachments"] = [{"filename": "a.txt", "content": "aGk=", "content_type": "text/plain"}]
    model = email_create(api_key=None, from_email=fields.pop("from"), **fields)
    table = Email._meta.db_table
    columns = [f.column for f in Email._meta.concrete_fields if f.column not in ("id", "status", "created_at",
                                                                                    "updated_at")]  # fmt: skip
    listed = ", ".join(f'"{c}"' for c in columns)
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {table} (id, status, created_at, updated_at, {listed})
                SELECT gen_random_uuid(), (%s::text[])[(n / 3) %% 3 + 1],
                       %s - ((%s::int[])[n %% 3 + 1] * interval '1 day'),
                       %s - ((%s::int[])[n %% 3 + 1] * interval '1 day'),
                       {listed}
                  FROM {table}, generate_series(0, %s - 1) AS n WHERE id = %s""",
            [STATUSES, now, AGES, now, AGES, count, model.id],
        )
        cursor.execute(
            f"INSERT INTO {EmailEvent._meta.db_table} (email_id, type, provider, detail, at) "
            f"SELECT id, 'sent', '', '', now() FROM {table} WHERE id <> %s",
            [model.id],
        )
    Email.objects.filter(id=model.id).delete()


def _counts() -> dict[tuple[str, int, bool], int]:
    """Emails by (status, age in days, erased)."""
    now = timezone.now()
    counts: dict[tuple[str, int, bool], int] = {}
    # Instances, not values_list(): a subject sealed with the bodies is in `content` (Email.from_db()).
    for email in Email.objects.only("status", "created_at", "erased_at", "subject", "attachments", "content"):
        erased = email.erased_at is not None
        assert (email.subject == "" and email.attachments == []) == erased  # content goes exactly with erased_at
        key = (email.status, round((now - email.created_at) / timedelta(days=1)), erased)
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_retention_is_off_unless_configured(settings):
    settings.MAIL_RETENTION_DAYS = settings.MAIL_DELETE_AFTER_DAYS = None
    _generate(30)

    assert emails_apply_retention() == type(emails_apply_retention())(erased=0, deleted=0)
    assert not Email.objects.filter(erased_at__isnull=False).exists() and Email.objects.count() == 30


def test_final_emails_are_erased_then_deleted_exactly_by_age_in_bounded_batches(settings):
    settings.MAIL_RETENTION_DAYS, settings.MAIL_DELETE_AFTER_DAYS = 30, 90
    _generate(EMAILS)
    each = EMAILS // 9  # emails per (status, age)

    result = emails_apply_retention(batch=500)

    # Final ones (SENT, FAILED): 100 days old deleted with their events, 40 days old erased, 1 day old kept;
    # PENDING ones (a send_at far ahead) kept whole at any age.
    assert (result.deleted, result.erased) == (2 * each, 2 * each)
    assert _counts() == {
        **{(status, 1, False): each for status in STATUSES},
        **{(status, 40, True): each for status in ("SENT", "FAILED")},
        ("PENDING", 40, False): each,
        ("PENDING", 100, False): each,
    }
    assert EmailEvent.objects.count() == Email.objects.count()
    assert emails_apply_retention(batch=500) == type(result)(erased=0, deleted=0)  # nothing left to do


def test_a_run_stops_after_its_time_and_the_next_goes_on(settings):
    settings.MAIL_RETENTION_DAYS, settings.MAIL_DELETE_AFTER_DAYS = 30, None
    _generate(900)

    first = emails_apply_retention(batch=50, seconds=0)  # one batch, then the time is up

    assert first.erased == 50
    assert emails_apply_retention(batch=50).erased == 2 * 900 // 9 * 2 - 50


def test_the_api_shows_an_erased_email_as_such(settings, alice):
    settings.MAIL_RETENTION_DAYS, settings.MAIL_DELETE_AFTER_DAYS = 30, None
    email_id = alice.post("/api/v1/emails", email_payload(), format="json").json()["id"]
    old = timezone.now() - timedelta(days=31)
    Email.objects.filter(id=email_id).update(status="SENT", created_at=old, updated_at=old)

    emails_apply_retention()

    shown = alice.get(f"/api/v1/emails/{email_id}").json()
    assert shown["erased_at"] is not None
    assert (shown["subject"], shown["text"], shown["attachments"]) == ("", "", [])
    assert (shown["status"], shown["to"]) == ("SENT", ["alice@example.org"])
