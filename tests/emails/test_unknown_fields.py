"""Nothing a client sends is dropped without a word: a field or query parameter the API does not know is a 400
naming it, at every level, and nothing is stored."""

import base64

import pytest

from emails.models import Email
from tests.conftest import email_payload

pytestmark = pytest.mark.django_db

ATTACHMENT = {"filename": "a.txt", "content": base64.b64encode(b"hi").decode()}


def test_an_unknown_field_inside_an_attachment_is_a_400_naming_it(alice):
    response = alice.post(
        "/api/v1/emails",
        email_payload(attachments=[ATTACHMENT, {**ATTACHMENT, "disposition": "inline"}]),
        format="json",
    )

    assert response.status_code == 400
    assert response.json() == {"attachments": {"1": {"disposition": ["Unknown field."]}}}
    assert not Email.objects.exists()


def test_an_attachments_unknown_field_is_named_beside_its_other_errors(alice):
    response = alice.post(
        "/api/v1/emails", email_payload(attachments=[{"filenam": "a.txt", "content": "x"}]), format="json"
    )

    assert response.status_code == 400
    assert set(response.json()["attachments"]["0"]) == {"filenam", "filename", "content"}


def test_an_unknown_field_beside_a_batchs_emails_is_a_400_naming_it(alice):
    response = alice.post("/api/v1/emails/batch", {"emails": [email_payload()], "dry_run": True}, format="json")

    assert response.status_code == 400
    assert response.json() == {"dry_run": ["Unknown field."]}
    assert not Email.objects.exists()


def test_an_unknown_field_in_a_batch_items_attachment_refuses_that_item_only(alice):
    items = [email_payload(), email_payload(attachments=[{**ATTACHMENT, "size": 2}])]

    response = alice.post("/api/v1/emails/batch", {"emails": items}, format="json")

    assert response.status_code == 202
    accepted, refused = response.json()["results"]
    assert accepted["status"] == "PENDING"
    assert refused == {"errors": {"attachments": {"0": {"size": ["Unknown field."]}}}}
    assert Email.objects.count() == 1


def test_an_unknown_query_parameter_is_a_400_naming_it(alice):
    response = alice.get("/api/v1/emails", {"status": "SENT", "recipient": "alice@example.org", "page": "2"})

    assert response.status_code == 400
    assert response.json() == {"page": ["Unknown query parameter."], "recipient": ["Unknown query parameter."]}


def test_a_status_filter_matching_no_status_lists_the_statuses(alice):
    response = alice.get("/api/v1/emails", {"status": "DELIVERED"})

    assert response.status_code == 400
    assert response.json() == {"status": ["'DELIVERED' is not one of PENDING, PROCESSING, SENT, FAILED (in any case)."]}


def test_a_status_filter_matches_in_any_case(alice):
    email_id = alice.post("/api/v1/emails", email_payload(), format="json").json()["id"]

    for status in ("pending", "Pending", "PENDING"):
        assert [e["id"] for e in alice.get("/api/v1/emails", {"status": status}).json()["results"]] == [email_id]
    assert alice.get("/api/v1/emails", {"status": "sent"}).json()["results"] == []


def test_a_body_of_many_long_unknown_fields_is_named_in_a_bounded_answer(alice):
    payload = email_payload(**{f"{n:04d}" + "x" * 5000: "" for n in range(1000)})
    response = alice.post("/api/v1/emails", payload, format="json")
    assert response.status_code == 400
    errors = response.json()
    assert len(errors) == 21 and errors["…"] == ["And 980 more unknown."]
    assert max(map(len, errors)) == 100
    assert len(response.content) < 5000
