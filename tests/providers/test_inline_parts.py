"""Inline parts through an ESP (Mailgun, by django-anymail, faked only at its HTTP API): anymail finds them as it
finds those its attach_inline_image() makes, and sends each as the ESP's inline file named by its content id."""

import base64
import os
from email import message_from_bytes

import pytest
import responses

from emails.models import Email
from emails.services import email_send
from tests.conftest import make_due, make_emails

pytestmark = pytest.mark.django_db

API = "https://api.mailgun.net/v3/example.com/messages"
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(256)
PDF = b"%PDF-1.4\n" + os.urandom(256)


@pytest.fixture
def mailgun(settings):
    settings.MAIL_PROVIDERS = [{"name": "mailgun", "backend": "mailgun", "options": {"api_key": "key-test"}}]
    with responses.RequestsMock() as api:
        api.post(API, json={"id": "<20261204.1.ABC@example.com>", "message": "Queued. Thank you."})
        yield api


def _form_files(request) -> dict[str, list[tuple[str | None, bytes]]]:
    """The multipart/form-data body's files, by field name: [(file name, content)]."""
    content_type = request.headers["Content-Type"]
    form = message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + request.body)
    files: dict[str, list[tuple[str | None, bytes]]] = {}
    for part in form.get_payload():
        if part.get_filename():
            name = part.get_param("name", header="Content-Disposition")
            files.setdefault(name, []).append((part.get_filename(), part.get_payload(decode=True)))
    return files


def test_an_inline_attachment_goes_to_the_esp_as_an_inline_file_named_by_its_content_id(mailgun):
    attachments = [
        {"filename": "logo.png", "content_type": "image/png", "content": base64.b64encode(PNG).decode(),
         "content_id": "logo"},
        {"filename": "invoice.pdf", "content_type": "application/pdf", "content": base64.b64encode(PDF).decode()},
    ]  # fmt: skip
    [email_id] = make_emails(1, html='<img src="cid:logo">', attachments=attachments)
    make_due(email_id)

    email_send(email_id)

    assert Email.objects.get(id=email_id).status == "SENT"
    files = _form_files(mailgun.calls[0].request)
    assert files["inline"] == [("logo", PNG)]
    assert files["attachment"] == [("invoice.pdf", PDF)]
