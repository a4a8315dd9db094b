"""GET /api/v1/emails: newest first, filtered by status, paginated by cursor."""

import pytest

from emails.models import Email
from tests.conftest import email_payload

pytestmark = pytest.mark.django_db


def _submit(client, count: int) -> list[str]:
    return [client.post("/api/v1/emails", email_payload(), format="json").json()["id"] for _ in range(count)]


def test_it_pages_through_every_email_newest_first(alice):
    ids = _submit(alice, 7)

    seen, url = [], "/api/v1/emails?limit=3"
    while url:
        page = alice.get(url).json()
        seen += [email["id"] for email in page["results"]]
        url = page["next"]

    assert seen == ids[::-1]


def test_it_filters_by_status(alice):
    pending, failed = _submit(alice, 2)
    Email.objects.filter(id=failed).update(status=Email.Status.FAILED, last_error="SMTP 550 no such user")

    results = alice.get("/api/v1/emails?status=FAILED").json()["results"]

    assert [(e["id"], e["last_error"]) for e in results] == [(failed, "SMTP 550 no such user")]
    assert [e["id"] for e in alice.get("/api/v1/emails?status=PENDING").json()["results"]] == [pending]


def test_it_refuses_an_unknown_status(alice):
    response = alice.get("/api/v1/emails?status=LOST")

    assert response.status_code == 400
    assert "status" in response.json()
