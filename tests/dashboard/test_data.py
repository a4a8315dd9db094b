"""What the dashboard's refresh answers: counts, queue, chart, providers and latest failures."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from emails import queue
from emails.models import Email, EmailEvent
from emails.selectors import counts_by_status_at_scale
from providers import circuit
from tests.conftest import make_emails

pytestmark = pytest.mark.django_db


def _set(ids: list[str], **fields) -> None:
    Email.objects.filter(id__in=ids).update(**fields)


def test_it_counts_by_status_and_charts_the_last_hour_per_minute(operator, time_machine):
    minute = timezone.now().replace(second=0, microsecond=0)
    now = minute + timedelta(seconds=30)
    time_machine.move_to(now, tick=False)  # the current minute is the chart's last
    sent, failed, old = make_emails(3), make_emails(2), make_emails(1)
    _set(sent, status="SENT", sent_at=minute - timedelta(minutes=2) + timedelta(seconds=5))
    _set(failed, status="FAILED", last_error="SMTP 550 unknown user", updated_at=minute + timedelta(seconds=1))
    _set(old, status="SENT", created_at=now - timedelta(hours=2), sent_at=now - timedelta(hours=2))
    pending = make_emails(1)
    _set(pending, next_attempt_at=now - timedelta(seconds=90))
    for email_id in sent:
        queue.publish([email_id])  # (these tests' transactions never commit, so nothing was published)

    data = operator.get("/dashboard/data").json()

    assert data["counts"] == {"PENDING": 1, "PROCESSING": 0, "SENT": 4, "FAILED": 2}
    assert data["estimated"] == []
    assert data["queue_depth"] == 3
    assert 90 <= data["oldest_pending_age_seconds"] < 120
    chart = data["chart"]
    assert len(chart["minutes"]) == 60
    assert chart["minutes"][-1].startswith(minute.strftime("%Y-%m-%dT%H:%M"))
    assert sum(chart["accepted"]) == 6  # the two-hour-old one is off the chart
    assert chart["accepted"][-1] == 6
    assert chart["sent"][-3] == 3
    assert sum(chart["sent"]) == 3
    assert chart["failed"][-1] == 2


def test_it_lists_the_latest_failures_newest_first_with_a_link_to_the_admin(operator):
    ids = make_emails(3)
    now = timezone.now()
    for age, email_id in enumerate(ids):
        _set([email_id], status="FAILED", last_error=f"error {age}", updated_at=now - timedelta(minutes=age))

    failures = operator.get("/dashboard/data").json()["failures"]

    assert [f["id"] for f in failures] == ids
    assert [f["last_error"] for f in failures] == ["error 0", "error 1", "error 2"]
    assert failures[0]["admin_url"] == f"/admin/emails/email/{ids[0]}/change/"


def test_it_shows_each_providers_breaker_rate_limit_rate_and_latest_error(operator, settings):
    settings.MAIL_PROVIDERS = [
        {"name": "primary", "backend": "locmem", "rate_limit": 20, "burst": 5},
        {"name": "backup", "backend": "locmem", "priority": 2},
    ]
    settings.MAIL_CIRCUIT_THRESHOLD = 2
    circuit.record_failure("primary")
    circuit.record_failure("primary")  # open
    [retried, sent_now, sent_earlier] = make_emails(3)
    now = timezone.now()
    EmailEvent.objects.create(email_id=retried, type="retry", provider="primary", detail="old", at=now - timedelta(1))
    EmailEvent.objects.create(email_id=retried, type="retry", provider="primary", detail="SMTP 451 busy", at=now)
    EmailEvent.objects.create(email_id=retried, type="delivered", provider="primary", detail="not an error", at=now)
    _set([sent_now], status="SENT", provider="backup", sent_at=now - timedelta(seconds=10))
    _set([sent_earlier], status="SENT", provider="backup", sent_at=now - timedelta(minutes=5))

    primary, backup = operator.get("/dashboard/data").json()["providers"]

    assert (primary["name"], primary["backend"], primary["rate_limit"], primary["burst"]) == (
        "primary",
        "locmem",
        20,
        5,
    )
    assert (primary["circuit"]["state"], primary["circuit"]["failures"]) == ("open", 2)
    assert primary["last_error"]["detail"] == "SMTP 451 busy"
    assert (backup["circuit"]["state"], backup["last_error"], backup["rate_limit"]) == ("closed", None, None)
    assert (backup["sent_last_minute"], backup["rate_per_second"]) == (1, round(1 / 60, 2))
    assert "options" not in primary  # credentials live there


def test_above_the_threshold_sent_and_failed_are_estimated_and_the_few_counted_exactly():
    _set(make_emails(30), status="SENT")
    _set(make_emails(10), status="FAILED")
    make_emails(5)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE emails_email")  # autovacuum's job in production

    assert counts_by_status_at_scale() == ({"PENDING": 5, "PROCESSING": 0, "SENT": 30, "FAILED": 10}, [])
    counts, estimated = counts_by_status_at_scale(exact_below=1)
    assert estimated == ["SENT", "FAILED"]
    assert counts == {"PENDING": 5, "PROCESSING": 0, "SENT": 30, "FAILED": 10}  # ANALYZE read every row here
    _set(make_emails(4), status="PROCESSING")
    assert counts_by_status_at_scale(exact_below=1)[0]["PROCESSING"] == 4  # exact, not from statistics


def test_the_page_shows_the_same_figures_before_any_script_runs(operator):
    _set(make_emails(2), status="FAILED", last_error="SMTP 550 unknown user")

    page = operator.get("/dashboard/").content.decode()

    assert '<span class="value" data-count="FAILED">2</span>' in page
    assert "SMTP 550 unknown user" in page
    assert 'id="snapshot" type="application/json"' in page
