"""generate_emails fills the database with a realistic mix for trying the admin and dashboard at scale."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Count
from django.utils import timezone

from emails.models import ApiKey, Email, EmailEvent
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


def test_it_says_which_test_api_keys_it_creates_and_how_many_emails_each():
    out = io.StringIO()
    call_command("generate_emails", 300, providers="relay", seed=3, stdout=out)

    keys = ApiKey.objects.filter(name__startswith="generated-").order_by("id")
    assert [(k.name, k.test) for k in keys] == [
        ("generated-shop", True), ("generated-accounts", True), ("generated-news", True)
    ]  # fmt: skip
    said = out.getvalue()
    assert "test API keys generated-shop, generated-accounts, generated-news" in said
    assert "never handed to a provider" in said
    for key in keys:
        assert f"  {key.emails.count()} for API key {key.name} (id {key.id}, test)\n" in said
    assert sum(key.emails.count() for key in keys) == 300


def test_every_generated_email_is_a_test_email_even_with_a_real_provider_configured(settings):
    settings.MAIL_PROVIDERS = [{"name": "relay", "backend": "smtp", "options": {"host": "127.0.0.1", "port": 2525}}]

    call_command("generate_emails", 200, seed=5, stdout=io.StringIO())

    assert Email.objects.count() == Email.objects.filter(test=True).count() == 200
    assert set(Email.objects.exclude(provider="").values_list("provider", flat=True)) == {"relay"}


def test_it_runs_again_with_the_same_seed_on_its_own_keys_marking_one_made_before_keys_had_the_mark():
    earlier = ApiKey.objects.create(name="generated-shop", key_hash="0" * 64, prefix="ms_gen", test=False)

    call_command("generate_emails", 10, seed=1, stdout=io.StringIO())
    call_command("generate_emails", 10, seed=1, stdout=io.StringIO())

    assert Email.objects.filter(test=True).count() == 20
    assert ApiKey.objects.filter(name__startswith="generated-").count() == 3
    earlier.refresh_from_db()
    assert earlier.test


def test_upgrading_marks_the_emails_generated_before_the_mark_and_no_other():
    before, marking = (
        ("emails", "0008_trust_senders_owned_templates_keyed_suppressions"),
        ("emails", "0009_test_emails_never_reach_a_provider"),
    )
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    old = executor.loader.project_state([before]).apps
    OldApiKey, OldEmail = old.get_model("emails", "ApiKey"), old.get_model("emails", "Email")
    generated = OldApiKey.objects.create(name="generated-shop", key_hash="1" * 64, prefix="ms_gen")
    real = OldApiKey.objects.create(name="shop", key_hash="2" * 64, prefix="ms_AbCdEfG")
    for api_key in (generated, real, None):
        OldEmail.objects.create(api_key=api_key, from_email="shop@example.com", to=["alice@example.org"])

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert marking in MigrationExecutor(connection).loader.applied_migrations
    assert list(ApiKey.objects.filter(test=True).values_list("name", flat=True)) == ["generated-shop"]
    assert list(Email.objects.filter(test=True).values_list("api_key_id", flat=True)) == [generated.id]
    assert Email.objects.filter(test=False).count() == 2
