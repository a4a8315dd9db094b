"""Inline attachments (Postmark's ContentID): an attachment with a `content_id` is a part the html shows as
cid:<content_id>, sent inside a multipart/related with the html."""

import base64
import os

import pytest

from emails.models import Email
from emails.services import email_send
from tests.conftest import email_payload

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(512)
PDF = b"%PDF-1.4\n" + os.urandom(1024)
HTML = '<p>Our logo: <img src="cid:logo.png@shop"></p>'


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _logo(**overrides) -> dict:
    return {"filename": "logo.png", "content": _b64(PNG), "content_id": "logo.png@shop", **overrides}


def _parts(message) -> list[tuple[str, str | None, str | None]]:
    """The MIME tree, depth first: (content type, its Content-ID, its disposition) of each part."""
    return [(part.get_content_type(), part["Content-ID"], part.get_content_disposition()) for part in message.walk()]


def test_an_inline_attachment_is_sent_as_a_related_part_of_the_html(alice, sending_to_sink):
    invoice = {"filename": "invoice.pdf", "content": _b64(PDF)}
    payload = email_payload(html=HTML, attachments=[_logo(), invoice])
    email_id = alice.post("/api/v1/emails", payload, format="json").json()["id"]

    email_send(email_id)

    [received] = sending_to_sink.received
    assert _parts(received.message) == [
        ("multipart/mixed", None, None),
        ("multipart/alternative", None, None),
        ("text/plain", None, None),
        ("multipart/related", None, None),
        ("text/html", None, None),
        ("image/png", "<logo.png@shop>", "inline"),
        ("application/pdf", None, "attachment"),
    ]
    related = next(p for p in received.message.walk() if p.get_content_type() == "multipart/related")
    assert related.get_param("type") == "text/html"
    [html, image] = related.get_payload()
    assert 'src="cid:logo.png@shop"' in html.get_payload(decode=True).decode()
    assert image.get_payload(decode=True) == PNG
    assert image.get_filename() == "logo.png"


def test_an_html_only_email_gets_its_inline_part_beside_the_html(alice, sending_to_sink):
    payload = {**email_payload(html=HTML, attachments=[_logo()])}
    del payload["text"]
    email_id = alice.post("/api/v1/emails", payload, format="json").json()["id"]

    email_send(email_id)

    [received] = sending_to_sink.received
    assert _parts(received.message) == [
        ("multipart/mixed", None, None),
        ("multipart/related", None, None),
        ("text/html", None, None),
        ("image/png", "<logo.png@shop>", "inline"),
    ]


def test_the_email_shows_its_inline_attachment(alice):
    response = alice.post("/api/v1/emails", email_payload(html=HTML, attachments=[_logo()]), format="json")

    assert response.status_code == 202
    shown = {"filename": "logo.png", "content_type": "image/png", "content_id": "logo.png@shop", "size": len(PNG)}
    assert response.json()["attachments"] == [shown]
    assert alice.get(f"/api/v1/emails/{response.json()['id']}").json()["attachments"] == [shown]
    assert Email.objects.get().attachments[0]["content_id"] == "logo.png@shop"


def test_a_resend_sends_the_inline_attachment_again(alice, sending_to_sink):
    original = alice.post("/api/v1/emails", email_payload(html=HTML, attachments=[_logo()]), format="json").json()

    copy = alice.post(f"/api/v1/emails/{original['id']}/resend").json()
    email_send(copy["id"])

    assert copy["attachments"] == original["attachments"]
    [received] = sending_to_sink.received
    [image] = [p for p in received.message.walk() if p["Content-ID"]]
    assert (image["Content-ID"], image.get_payload(decode=True)) == ("<logo.png@shop>", PNG)


@pytest.mark.parametrize(
    ("content_id", "why"),
    [
        ("logo\r\nBcc: victim@example.org", "CR, LF"),
        ("cid:logo.png", "not a content id"),
        ("<logo.png>", "not a content id"),
        ("my logo", "not a content id"),
        ("logo%20png", "not a content id"),
        ("l" * 129, "no more than 128 characters"),
        ("", "blank"),
        (42, "string"),
    ],
    ids=["CRLF", "cid: prefix", "brackets", "a space", "a percent", "129 characters", "empty", "a number"],
)
def test_a_bad_content_id_is_a_400_naming_it(alice, content_id, why):
    response = alice.post("/api/v1/emails", email_payload(attachments=[_logo(content_id=content_id)]), format="json")

    assert response.status_code == 400
    [message] = response.json()["attachments"]["0"]["content_id"]
    assert why in message
    assert not Email.objects.exists()


def test_a_content_id_given_twice_in_one_email_is_a_400(alice):
    other = _logo(filename="other.png")

    response = alice.post("/api/v1/emails", email_payload(attachments=[_logo(), other]), format="json")

    assert response.status_code == 400
    assert "'logo.png@shop' is given more than once" in response.json()["attachments"][0]
    assert not Email.objects.exists()


def test_an_inline_attachment_counts_towards_the_size_limit(alice, settings):
    settings.MAIL_MAX_EMAIL_BYTES = len(PNG) + 10  # the 10 MB rule at a size a test can afford

    response = alice.post("/api/v1/emails", email_payload(html="<p>" + "x" * 20, attachments=[_logo()]), format="json")

    assert response.status_code == 413
    assert not Email.objects.exists()
