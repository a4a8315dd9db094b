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


def test_paging_is_stable_while_new_emails_arrive(alice):
    original = set()
    for _ in range(2):  # a batch shares one created_at: the order must not depend on it alone
        response = alice.post("/api/v1/emails/batch", {"emails": [email_payload()] * 500}, format="json")
        original |= {r["id"] for r in response.json()["results"]}

    seen, url, arrived = [], "/api/v1/emails?limit=40", 0
    while url:
        page = alice.get(url).json()
        seen += [email["id"] for email in page["results"]]
        url = page["next"]
        if arrived < 100:
            _submit(alice, 4)  # newer than everything paged so far
            arrived += 4

    assert arrived == 100
    assert len(seen) == len(set(seen)), "an email appeared twice"
    assert original <= set(seen), "an email was skipped"
    assert len(original) == 1000


def test_it_filters_by_tag_recipient_and_time(alice):
    from django.utils import timezone

    tagged = alice.post("/api/v1/emails", email_payload(tags=["invoice", "eu"]), format="json").json()["id"]
    to_bob = alice.post("/api/v1/emails", email_payload(to=["Bob <Bob@Example.org>"]), format="json").json()["id"]
    middle = timezone.now().isoformat()
    later = alice.post("/api/v1/emails", email_payload(), format="json").json()["id"]

    def ids(query: str) -> list[str]:
        response = alice.get("/api/v1/emails", query)
        assert response.status_code == 200, response.content
        return [e["id"] for e in response.json()["results"]]

    assert ids({"tag": "invoice"}) == [tagged]
    assert ids({"to": "bob@example.org"}) == [to_bob]
    assert ids({"created_after": middle}) == [later]
    assert ids({"created_before": middle}) == [to_bob, tagged]
    assert ids({"tag": "invoice", "to": "bob@example.org"}) == []


def test_it_refuses_a_forged_cursor(alice):
    response = alice.get("/api/v1/emails", {"cursor": "not-a-cursor"})

    assert response.status_code == 400
    assert "cursor" in response.json()
