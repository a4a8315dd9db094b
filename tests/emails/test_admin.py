"""The operator's admin: find emails, see why they failed, resend and retry."""

import pytest
from django.contrib.auth.models import User

from emails.models import Email
from tests.conftest import email_payload

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client):
    client.force_login(User.objects.create_superuser("operator", "op@example.com", "pw"))
    return client


@pytest.fixture
def emails(alice) -> list[Email]:
    ids = [
        alice.post("/api/v1/emails", email_payload(to=[f"user{n}@example.org"]), format="json").json()["id"]
        for n in range(3)
    ]
    Email.objects.filter(id=ids[0]).update(status=Email.Status.FAILED, attempts=5, last_error="SMTP 550 unknown user")
    return [Email.objects.get(id=i) for i in ids]


def test_it_searches_by_recipient_and_by_id(operator, emails):
    by_recipient = operator.get("/admin/emails/email/", {"q": "User1@Example.org"})
    by_id = operator.get("/admin/emails/email/", {"q": str(emails[2].id)})

    assert [e.id for e in by_recipient.context["cl"].result_list] == [emails[1].id]
    assert [e.id for e in by_id.context["cl"].result_list] == [emails[2].id]


def test_it_filters_by_status_and_shows_the_error(operator, emails):
    response = operator.get("/admin/emails/email/", {"status__exact": "FAILED"})

    assert [e.id for e in response.context["cl"].result_list] == [emails[0].id]
    assert "SMTP 550 unknown user" in response.content.decode()


def test_it_shows_an_email_with_its_events(operator, emails):
    response = operator.get(f"/admin/emails/email/{emails[0].id}/change/")

    assert response.status_code == 200
    assert "SMTP 550 unknown user" in response.content.decode()


def test_resend_creates_a_new_email_with_the_same_content(operator, emails):
    original = emails[1]

    operator.post("/admin/emails/email/", {"action": "resend", "_selected_action": [original.id]})

    copy = Email.objects.get(resent_from=original)
    assert copy.id != original.id
    assert (copy.status, copy.to, copy.subject, copy.text) == ("PENDING", original.to, original.subject, original.text)


def test_retry_now_gives_a_failed_email_new_attempts(operator, emails):
    failed = emails[0]

    operator.post("/admin/emails/email/", {"action": "retry_now", "_selected_action": [failed.id, emails[1].id]})

    failed.refresh_from_db()
    assert (failed.status, failed.attempts, failed.last_error) == ("PENDING", 0, "")
    assert Email.objects.get(id=emails[1].id).status == "PENDING"  # was not FAILED: untouched
