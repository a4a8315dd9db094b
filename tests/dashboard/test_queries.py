"""The number of queries per dashboard refresh and per admin page does not grow with the data: the
same pages are counted on a small and on a larger database (more emails, failures, events, providers)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from emails.models import Email, EmailEvent
from tests.conftest import make_emails

pytestmark = pytest.mark.django_db

PROVIDERS = [{"name": f"provider{n}", "backend": "locmem", "priority": n, "rate_limit": 10} for n in range(1, 6)]


@pytest.fixture
def superuser(client):
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def _grow(emails: int, failures: int, providers: int, settings) -> list[str]:
    """Adds emails, of which `failures` FAILED with an error event, spread over `providers` providers."""
    settings.MAIL_PROVIDERS = PROVIDERS[:providers]
    ids = make_emails(emails, to=["someone@example.org"])
    for n, email_id in enumerate(ids[:failures]):
        provider = PROVIDERS[n % providers]["name"]
        Email.objects.filter(id=email_id).update(status="FAILED", provider=provider, last_error="SMTP 550")
        EmailEvent.objects.create(email_id=email_id, type="failed", provider=provider, detail="SMTP 550")
    Email.objects.filter(id__in=ids[failures:]).update(status="SENT", provider=PROVIDERS[0]["name"],
                                                        sent_at=timezone.now())  # fmt: skip
    return ids


def _queries(get: Callable[[], object]) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = get()
    assert response.status_code == 200
    return len(queries)


PAGES = [
    "/dashboard/data",
    "/dashboard/",
    "/admin/emails/email/",
    "/admin/emails/email/?status__exact=FAILED",
    "/admin/emails/email/?provider=provider1",
    "/admin/emails/email/?q=someone@example.org",
    "/admin/emails/email/?created_at__gte=2000-01-01T00:00:00%2B00:00",
]


def test_queries_per_page_stay_the_same_with_more_emails_failures_and_providers(superuser, settings):
    _grow(3, failures=1, providers=1, settings=settings)
    small = {page: _queries(lambda page=page: superuser.get(page)) for page in PAGES}

    _grow(60, failures=15, providers=5, settings=settings)
    large = {page: _queries(lambda page=page: superuser.get(page)) for page in PAGES}

    assert large == small
    assert small["/dashboard/data"] <= 9  # session, user, and the snapshot's 6 (webhooks: one)


def test_queries_on_an_email_page_do_not_grow_with_its_events(superuser, settings):
    [few, many] = _grow(2, failures=2, providers=1, settings=settings)
    EmailEvent.objects.bulk_create(EmailEvent(email_id=many, type="retry", detail=f"try {n}") for n in range(30))
    superuser.get(f"/admin/emails/email/{few}/change/")  # first admin page: caches content types

    assert _queries(lambda: superuser.get(f"/admin/emails/email/{few}/change/")) == _queries(
        lambda: superuser.get(f"/admin/emails/email/{many}/change/")
    )


def test_an_email_progress_is_one_query(operator):
    [email_id] = make_emails(1)

    with CaptureQueriesContext(connection) as queries:
        assert operator.get(f"/dashboard/emails/{email_id}").json()["status"] == "PENDING"

    email_queries = [q["sql"] for q in queries if "emails_email" in q["sql"]]
    assert len(email_queries) == 1
    assert '"text"' not in email_queries[0]  # no bodies read to follow a status
