"""Attachments: validated at submit, stored with the email, sent byte for byte."""

import base64
import os

import pytest

from emails.models import Email
from emails.services import email_send
from tests.conftest import email_payload

pytestmark = pytest.mark.django_db

PDF = b"%PDF-1.4\n" + os.urandom(2048)
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(512)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_two_attachments_arrive_byte_for_byte(alice, sending_to_sink):
    attachments = [
        {"filename": "invoice.pdf", "content": _b64(PDF), "content_type": "application/pdf"},
        {"filename": "logo.png", "content": _b64(PNG)},
    ]
    response = alice.post("/api/v1/emails", email_payload(attachments=attachments), format="json")
    assert response.status_code == 202
    assert response.json()["attachments"] == [
        {"filename": "invoice.pdf", "content_type": "application/pdf", "content_id": None, "size": len(PDF)},
        {"filename": "logo.png", "content_type": "image/png", "content_id": None, "size": len(PNG)},
    ]

    email_send(response.json()["id"])

    [received] = sending_to_sink.received
    parts = {p.get_filename(): p for p in received.message.walk() if p.get_filename()}
    assert parts["invoice.pdf"].get_payload(decode=True) == PDF
    assert parts["logo.png"].get_payload(decode=True) == PNG
    assert parts["logo.png"].get_content_type() == "image/png"


def test_a_resend_sends_the_same_attachments(alice, sending_to_sink):
    attachment = {"filename": "invoice.pdf", "content": _b64(PDF)}
    original = alice.post("/api/v1/emails", email_payload(attachments=[attachment]), format="json").json()["id"]

    copy = alice.post(f"/api/v1/emails/{original}/resend").json()["id"]
    email_send(copy)

    [received] = sending_to_sink.received
    assert [p.get_payload(decode=True) for p in received.message.walk() if p.get_filename()] == [PDF]


@pytest.mark.parametrize(
    "attachment",
    [
        {"filename": "a.pdf", "content": "not base64!"},
        {"filename": "../../etc/passwd", "content": _b64(b"x")},
        {"filename": "a.pdf", "content": _b64(b"x"), "content_type": "pdf"},
        {"content": _b64(b"x")},
        {"filename": "a\r\nBcc: x@evil.test", "content": _b64(b"x")},
    ],
    ids=["bad base64", "a path", "bad content type", "no filename", "CRLF in filename"],
)
def test_a_bad_attachment_is_a_400(alice, attachment):
    response = alice.post("/api/v1/emails", email_payload(attachments=[attachment]), format="json")

    assert response.status_code == 400
    assert "attachments" in response.json()
    assert not Email.objects.exists()


def test_attachments_count_towards_the_10_mb(alice, settings):
    settings.MAIL_MAX_EMAIL_BYTES = 1000  # the same rule at a size a test can afford
    attachment = {"filename": "big.bin", "content": _b64(os.urandom(1001))}

    response = alice.post("/api/v1/emails", email_payload(attachments=[attachment]), format="json")

    assert response.status_code == 413
    assert not Email.objects.exists()
