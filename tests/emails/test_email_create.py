"""POST /api/v1/emails: what is accepted, and what is refused with the field named and nothing stored."""

import json

import pytest

from emails.models import Email
from tests.conftest import email_payload

pytestmark = pytest.mark.django_db

TOO_MANY = [f"user{n}@example.org" for n in range(51)]

BAD_REQUESTS = [
    # (what, payload overrides, status, field named in the response)
    ("bad from address", {"from": "not an address"}, 400, "from"),
    ("missing from", {"from": None}, 400, "from"),
    ("two addresses in from", {"from": "a@example.com, b@example.com"}, 400, "from"),
    ("CRLF in from's name", {"from": "Shop\r\nBcc: x@evil.test <shop@example.com>"}, 400, "from"),
    ("bad to address", {"to": ["alice@example.org", "bob@"]}, 400, "to"),
    ("empty to", {"to": []}, 400, "to"),
    ("to of the wrong type", {"to": {"address": "alice@example.org"}}, 400, "to"),
    ("51 recipients", {"to": TOO_MANY[:40], "cc": TOO_MANY[40:]}, 400, "to"),
    ("bad cc address", {"cc": ["@example.org"]}, 400, "cc"),
    ("CRLF in subject", {"subject": "Hi\r\nBcc: victim@example.org"}, 400, "subject"),
    ("LF in subject", {"subject": "Hi\nthere"}, 400, "subject"),
    ("vertical tab in subject", {"subject": "Hi\x0bBcc: victim@example.org"}, 400, "subject"),
    ("line separator in a header", {"headers": {"X-Note": "a\u2028Bcc: victim@example.org"}}, 400, "headers"),
    ("vertical tab in a quoted name", {"from": '"Eve\x0bReply-To: x@evil.test" <a@example.com>'}, 400, "from"),
    ("NUL in text", {"text": "Thank\x00you"}, 400, "text"),
    ("NUL in a metadata key", {"metadata": {"a\x00b": "1"}}, 400, "metadata"),
    ("missing subject", {"subject": None}, 400, "subject"),
    ("subject of the wrong type", {"subject": 42}, 400, "subject"),
    ("no body", {"text": None}, 400, "text"),
    ("text of the wrong type", {"text": ["Thank", "you"]}, 400, "text"),
    ("CRLF in a header value", {"headers": {"X-Campaign": "a\r\nBcc: victim@example.org"}}, 400, "headers"),
    ("bad header name", {"headers": {"X Campaign:": "a"}}, 400, "headers"),
    ("reserved header", {"headers": {"Bcc": "victim@example.org"}}, 400, "headers"),
    ("tags not a list", {"tags": "welcome"}, 400, "tags"),
    ("metadata value not a string", {"metadata": {"order": {"id": 1}}}, 400, "metadata"),
    ("send_at not a time", {"send_at": "tomorrow"}, 400, "send_at"),
    ("unknown field", {"htlm": "<p>typo</p>"}, 400, "htlm"),
]


def _without_nones(payload: dict) -> dict:
    return {k: v for k, v in payload.items() if v is not None}


@pytest.mark.parametrize(("what", "overrides", "status", "field"), BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS])
def test_it_refuses_bad_fields(alice, what, overrides, status, field):
    response = alice.post("/api/v1/emails", _without_nones(email_payload(**overrides)), format="json")

    assert response.status_code == status, response.content
    assert field in response.json()
    assert not Email.objects.exists()


def test_it_refuses_a_body_that_is_not_json(alice):
    response = alice.post("/api/v1/emails", "to=alice@example.org", content_type="text/plain")

    assert response.status_code == 415
    assert "text/plain" in response.json()["detail"]
    assert not Email.objects.exists()


def test_it_refuses_malformed_json(alice):
    response = alice.post("/api/v1/emails", '{"from": "shop@example.com",', content_type="application/json")

    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]
    assert not Email.objects.exists()


@pytest.mark.parametrize("body", [[email_payload()], None, "hello"], ids=["array", "null", "string"])
def test_it_refuses_json_that_is_not_an_object(alice, body):
    response = alice.post("/api/v1/emails", json.dumps(body), content_type="application/json")

    assert response.status_code == 400
    assert "non_field_errors" in response.json()
    assert not Email.objects.exists()


def test_it_refuses_a_request_over_the_size_limit(alice, settings):
    huge = "x" * (settings.MAIL_MAX_REQUEST_BYTES + 1)

    response = alice.post("/api/v1/emails", json.dumps(email_payload(text=huge)), content_type="application/json")

    assert response.status_code == 413
    assert str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in response.json()["detail"]
    assert not Email.objects.exists()


def test_it_refuses_an_email_over_the_size_limit(alice, settings):
    # The request fits, but text and html together are over 10 MB.
    half = "x" * (settings.MAIL_MAX_EMAIL_BYTES // 2 + 1)

    response = alice.post("/api/v1/emails", email_payload(text=half, html=half), format="json")

    assert response.status_code == 413
    assert not Email.objects.exists()


def test_it_accepts_an_email_and_answers_with_its_location(alice):
    response = alice.post(
        "/api/v1/emails",
        email_payload(
            to="Alice Liddell <Alice@Example.org>",
            cc=["carol@example.org"],
            headers={"X-Campaign": "spring"},
            tags=["order"],
            metadata={"order_id": "1234"},
        ),
        format="json",
    )

    assert response.status_code == 202
    body = response.json()
    assert response["Location"] == f"/api/v1/emails/{body['id']}"
    assert body["status"] == "PENDING"
    assert body["from"] == "Shop <shop@example.com>"
    assert body["to"] == ["Alice Liddell <Alice@Example.org>"]
    assert (body["tags"], body["metadata"], body["headers"]) == (
        ["order"],
        {"order_id": "1234"},
        {"X-Campaign": "spring"},
    )
    email = Email.objects.get(id=body["id"])
    assert email.recipients == ["alice@example.org", "carol@example.org"]
    assert email.api_key == alice.api_key


def test_it_accepts_exactly_50_recipients(alice):
    response = alice.post("/api/v1/emails", email_payload(to=TOO_MANY[:25], bcc=TOO_MANY[25:50]), format="json")

    assert response.status_code == 202


def test_it_accepts_html_only(alice):
    response = alice.post("/api/v1/emails", _without_nones(email_payload(text=None, html="<p>Hi</p>")), format="json")

    assert response.status_code == 202


def test_it_keeps_a_send_at_email_pending_until_then(alice):
    response = alice.post("/api/v1/emails", email_payload(send_at="2099-01-01T09:00:00Z"), format="json")

    assert response.status_code == 202
    email = Email.objects.get(id=response.json()["id"])
    assert email.next_attempt_at.isoformat() == "2099-01-01T09:00:00+00:00"
    assert response.json()["send_at"] == "2099-01-01T09:00:00Z"


def test_it_refuses_a_lone_surrogate(alice):
    # JSON can escape one (\ud800); UTF-8, the database and the message cannot hold it.
    body = json.dumps(email_payload(text="Thank \ud800 you"))

    response = alice.post("/api/v1/emails", body, content_type="application/json")

    assert response.status_code == 400
    assert "surrogate" in response.json()["text"][0]
    assert not Email.objects.exists()
