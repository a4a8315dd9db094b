"""A generated email never reaches a provider: whatever MAIL_PROVIDERS says when a worker takes it up, sending
records it SENT by the built-in `test` provider and hands nothing over."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db.models.functions import Now

from emails.models import Email
from emails.services import email_create, email_resend, emails_retry_now, emails_send, emails_sweep_stranded
from providers.registry import parse_providers
from tests.conftest import email_payload, make_emails
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)  # worker processes see only committed rows

Status = Email.Status


def test_generated_pending_emails_made_due_end_sent_via_test_and_the_sink_receives_nothing(sending_to_sink, services):
    call_command("generate_emails", 2000, seed=11, stdout=io.StringIO())  # about 1 % PENDING
    generated = Email.objects.filter(test=True)
    # What time and operators do to generated rows: the PENDING ones come due (and their publish is long
    # gone), a few are left PROCESSING by a killed worker, a few FAILED ones are retried from the admin.
    pending = list(generated.filter(status=Status.PENDING).values_list("id", flat=True))
    assert len(pending) >= 4
    generated.filter(id__in=pending).update(next_attempt_at=Now() - timedelta(hours=1))
    abandoned = pending[:2]
    generated.filter(id__in=abandoned).update(status=Status.PROCESSING, lease_until=Now() - timedelta(minutes=1))
    retried = list(generated.filter(status=Status.FAILED).values_list("id", flat=True)[:3])
    [control] = make_emails(1)  # not a test email: it does reach the sink

    services.worker()
    assert emails_retry_now(ids=retried) == 3
    swept = emails_sweep_stranded()
    assert swept.recovered == len(abandoned) and swept.requeued == len(pending) - len(abandoned)

    taken_up = [*pending, *retried]
    wait_for(
        lambda: Email.objects.filter(id__in=[*taken_up, control], status=Status.SENT).count() == len(taken_up) + 1,
        timeout=60,
        what="every email taken up to be SENT",
    )
    sent = Email.objects.filter(id__in=taken_up)
    assert set(sent.values_list("provider", flat=True)) == {"test"}
    assert all(email.events.filter(type="sent", provider="test").exists() for email in sent)
    assert Email.objects.get(id=control).provider == "sink"
    assert [received.email_id for received in sending_to_sink.received] == [control]


def test_a_test_email_goes_through_sending_but_not_to_a_provider(sending_to_sink):
    [email_id] = make_emails(1)
    Email.objects.filter(id=email_id).update(test=True)

    emails_send([email_id])

    email = Email.objects.get(id=email_id)
    assert (email.status, email.provider, email.attempts) == (Status.SENT, "test", 1)
    assert email.provider_message_id == f"<{email_id}@example.com>"
    assert [(e.type, e.provider) for e in email.events.all()] == [("sent", "test")]
    assert sending_to_sink.received == []


def test_mail_providers_may_not_name_a_provider_test():
    with pytest.raises(ImproperlyConfigured, match="provider 'test': the name is reserved for test emails"):
        parse_providers([{"name": "test", "backend": "locmem"}])


def test_a_resend_of_a_generated_email_and_a_new_email_of_its_key_never_reach_a_provider_either(sending_to_sink):
    call_command("generate_emails", 50, seed=3, stdout=io.StringIO())
    original = Email.objects.filter(test=True, status=Status.SENT).select_related("api_key").first()
    resent = email_resend(email=original)
    fields = email_payload()
    del fields["from"]
    submitted = email_create(api_key=original.api_key, from_email=original.from_email, **fields)

    emails_send([resent.id, submitted.id])

    for email in Email.objects.filter(id__in=[resent.id, submitted.id]):
        assert (email.test, email.status, email.provider) == (True, Status.SENT, "test")
    assert sending_to_sink.received == []
