"""generate_emails fills the database with a realistic mix for trying the admin and dashboard at scale."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Count
from django.utils import timezone

from emails.models import Email, EmailEvent
from emails.queue import queue_depth
from emails.selectors import oldest_due_age_seconds

pytestmark = pytest.mark.django_db(transaction=True)  # as run from a shell: VACUUM needs autocommit


def test_it_inserts_a_mix_of_statuses_providers_and_events_over_30_days_and_queues_nothing():
    call_command("generate_emails", 2000, providers="relay,backup", seed=7, stdout=io.StringIO())

    assert Email.objects.count() == 2000
    statuses = dict(Email.objects.values_list("status").annotate(n=Count("id")))
    assert statuses["SENT"] > 1700 and statuses["FAILED"] > 40 and statuses["PENDING"] > 0
    assert set(Email.objects.exclude(provider="").values_list("provider", flat=True)) == {"relay", "backup"}
    now = timezone.now()
    oldest, newest = Email.objects.order_by("created_at").values_list("created_at", flat=True)[::1999]
    assert now - timedelta(days=30) <= oldest < now - timedelta(days=25) and newest > now - timedelta(days=1)
    # Each SENT email has its sent event, each FAILED one its failed event with the reason.
    assert EmailEvent.objects.filter(type="sent").count() == statuses["SENT"]
    failed = Email.objects.filter(status="FAILED").first()
    assert failed.events.filter(type="failed").get().detail == failed.last_error
    assert all(a.split("@")[1] in {"example.com", "example.org", "example.net"}
               for e in Email.objects.all()[:200] for a in e.recipients)  # fmt: skip
    # PENDING ones are recent, retrying soon or scheduled: none has waited for days.
    assert oldest_due_age_seconds(Email.objects.all(), now) < 15 * 60
    assert Email.objects.filter(status="PENDING", send_at__gt=now).exists()
    assert queue_depth() == 0  # nothing published now (the sweep would, as they come due)


def test_it_refuses_to_generate_emails_a_real_provider_would_send(settings):
    settings.MAIL_PROVIDERS = [{"name": "relay", "backend": "smtp", "options": {"host": "127.0.0.1", "port": 2525}}]

    with pytest.raises(CommandError, match=r"real providers \(relay\).*--yes"):
        call_command("generate_emails", 10, stdout=io.StringIO())

    assert not Email.objects.exists()
