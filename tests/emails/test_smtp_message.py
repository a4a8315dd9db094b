"""An SMTP client's message read into an email's fields (emails/smtp_message.py): messages built by the libraries
people send with (Django, Python's email package, cron's plain text), carried by real SMTP to a sink, read from
what the sink received, and stored through the accepting service; hostile messages refused in milliseconds."""

import base64
import os
import smtplib
import time
from email.message import EmailMessage, Message
from email.mime.image import MIMEImage
from email.policy import SMTP

import pytest
from django.core.mail import EmailMultiAlternatives, get_connection

from emails.models import Email
from emails.services import email_create, email_fields
from emails.smtp_message import MAX_DEPTH, MAX_LINES, MAX_PARTS, UnparsableMessage, message_fields

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(600)
PDF = b"%PDF-1.4\n" + os.urandom(3000)
SUBJECT = "Ihre Bestellung Nr. 42 über 3 Artikel ist unterwegs — Lieferung voraussichtlich am Donnerstag, 10. Dezember"
HTML = '<p>Grüße! <img src="cid:logo@shop"></p>'
# Far above what reading a message takes (milliseconds), far below what an unbounded parse of these takes.
BOUND = 0.5  # seconds


def _received(sink) -> dict:
    """The fields of the last message the sink received, read as the SMTP door reads it."""
    received = sink.received[-1]
    return message_fields(received.raw, received.rcpt_tos)


def _stored(fields: dict) -> Email:
    """The fields validated as every door validates them, then stored by the accepting service."""
    validated = email_fields({"from": fields["from_email"], **{k: v for k, v in fields.items() if k != "from_email"}})
    email = email_create(api_key=None, **validated)
    return Email.objects.get(id=email.id)


def _files(fields: dict) -> list[tuple]:
    return [
        (a["filename"], base64.b64decode(a["content"]), a["content_type"], a.get("content_id"))
        for a in fields["attachments"]
    ]


def _smtp_send(sink, message: bytes, sender: str, recipients: list[str]) -> None:
    """As a client that writes its own message and envelope (mail(1), cron, a CMS) sends it: smtplib sends
    bytes as they are, so they have CRLF line ends, as SMTP wants."""
    with smtplib.SMTP("127.0.0.1", sink.port) as client:
        client.sendmail(sender, recipients, message)


def test_a_django_message_with_an_attachment_and_an_inline_image_is_read_whole(sink):
    message = EmailMultiAlternatives(
        subject="Grüße aus Köln ✓",
        body="Hallo Ånn,\nyour invoice is attached.\n",
        from_email="Jörg Müller <jorg@example.com>",
        to=["Ånn Öberg <ann@example.org>", "bob@example.org"],
        cc=["Carl <carl@example.org>"],
        bcc=["dora@example.net"],
        reply_to=['"Support, Shop" <help@example.com>'],
        headers={"X-Campaign": "spring-2026", "X-Note": "Frühling"},
        connection=get_connection("django.core.mail.backends.smtp.EmailBackend", host="127.0.0.1", port=sink.port),
    )
    message.attach_alternative(HTML, "text/html")
    message.attach("invoice.pdf", PDF, "application/pdf")
    logo = MIMEImage(PNG, "png")  # the inline image as people add one (Django has no API of its own for it)
    logo.add_header("Content-ID", "<logo@shop>")
    logo.add_header("Content-Disposition", "inline", filename="logo.png")
    message.attach(logo)
    message.send()

    fields = _received(sink)

    assert fields["from_email"] == "Jörg Müller <jorg@example.com>"
    assert fields["to"] == ["Ånn Öberg <ann@example.org>", "bob@example.org"]
    assert fields["cc"] == ["Carl <carl@example.org>"]
    assert fields["bcc"] == ["dora@example.net"]
    assert fields["reply_to"] == ['"Support, Shop" <help@example.com>']
    assert fields["subject"] == "Grüße aus Köln ✓"
    assert fields["text"] == "Hallo Ånn,\nyour invoice is attached.\n"
    assert fields["html"] == HTML
    assert fields["headers"]["X-Campaign"] == "spring-2026"
    assert fields["headers"]["X-Note"] == "Frühling"
    assert {"Date", "Message-ID"} <= set(fields["headers"])  # the client's, kept
    assert _files(fields) == [
        ("invoice.pdf", PDF, "application/pdf", None),
        ("logo.png", PNG, "image/png", "logo@shop"),
    ]
    email = _stored(fields)
    assert email.bcc == ["dora@example.net"]
    assert email.headers["X-Campaign"] == "spring-2026"
    assert [a["content_id"] for a in email.attachments if "content_id" in a] == ["logo@shop"]


def test_a_python_email_message_with_alternatives_related_and_attachments_is_read_whole(sink):
    message = EmailMessage()
    message["From"] = "Shop <shop@example.com>"
    message["To"] = "Zoë Ærø <zoe@example.org>"
    message["Subject"] = SUBJECT  # long: folded as several encoded words
    message["Bcc"] = "audit@example.net"  # written into the message, as some clients do: never passed on
    message["X-Campaign"] = "orders"
    message.set_content("Thank you.\n")
    message.add_alternative(HTML, subtype="html")
    html = message.get_payload()[1]
    html.add_related(PNG, "image", "png", cid="<logo@shop>", filename="logo.png")
    message.add_attachment(b"id;total\n42;9.90\n", "text", "csv", filename="order 42.csv")
    message.add_attachment(PDF, "application", "pdf", filename="Rechnung Nr. 42 · März.pdf")
    _smtp_send(sink, message.as_bytes(policy=SMTP), "shop@example.com", ["zoe@example.org", "archive@example.net"])

    fields = _received(sink)

    assert fields["to"] == ["Zoë Ærø <zoe@example.org>"]
    assert fields["bcc"] == ["archive@example.net"]  # the envelope's, not the header's audit@
    assert "Bcc" not in fields["headers"]
    assert fields["subject"] == SUBJECT
    assert fields["text"] == "Thank you.\n"
    assert fields["html"] == HTML + "\n"
    assert fields["headers"] == {"X-Campaign": "orders"}
    assert _files(fields) == [
        ("logo.png", PNG, "image/png", "logo@shop"),
        ("order 42.csv", b"id;total\n42;9.90\n", "text/csv", None),
        ("Rechnung Nr. 42 · März.pdf", PDF, "application/pdf", None),
    ]
    assert _stored(fields).bcc == ["archive@example.net"]


def test_parts_with_the_same_headers_are_each_read_as_their_own(sink):
    message = EmailMessage()
    message["From"] = "Shop <shop@example.com>"
    message["To"] = "alice@example.org"
    message["Subject"] = "Your invoices"
    message.set_content("Both attached.\n")
    for content in (PDF, PDF[::-1]):  # the same type, name and encoding: headers alike, contents not
        message.add_attachment(content, "application", "pdf", filename="invoice.pdf")
    _smtp_send(sink, message.as_bytes(policy=SMTP), "shop@example.com", ["alice@example.org"])

    fields = _received(sink)

    assert fields["text"] == "Both attached.\n"
    assert _files(fields) == [
        ("invoice.pdf", PDF, "application/pdf", None),
        ("invoice.pdf", PDF[::-1], "application/pdf", None),
    ]


def test_a_plain_text_message_as_cron_sends_it_is_read(sink):
    message = Message()  # no MIME headers at all, 8-bit UTF-8 text: what cron hands to sendmail
    message["From"] = "root@build.example.com (Cron Daemon)"
    message["To"] = "ops@example.org"
    message["Subject"] = "Cron <root@build> /usr/local/bin/backup"
    message["Auto-Submitted"] = "auto-generated"
    message["X-Cron-Env"] = "<SHELL=/bin/sh>"
    message["X-Cron-Env"] = "<HOME=/root>"
    message.set_payload("backup: 3 files, 1.2 GB\nWarnung: Datei »ä.txt« übersprungen\n")
    raw = message.as_string(policy=message.policy.clone(linesep="\r\n")).encode()
    assert b"MIME-Version" not in raw
    _smtp_send(sink, raw, "root@build.example.com", ["ops@example.org"])

    fields = _received(sink)

    assert fields["from_email"] == "root@build.example.com"
    assert fields["to"] == ["ops@example.org"]
    assert fields["bcc"] == []
    assert fields["subject"] == "Cron <root@build> /usr/local/bin/backup"
    assert fields["text"] == "backup: 3 files, 1.2 GB\nWarnung: Datei »ä.txt« übersprungen\n"
    assert fields["html"] == ""
    # The headers field is a map: a repeated header keeps its first value.
    assert fields["headers"] == {"Auto-Submitted": "auto-generated", "X-Cron-Env": "<SHELL=/bin/sh>"}
    assert fields["attachments"] == []
    assert _stored(fields).text == fields["text"]


def test_a_header_in_raw_utf8_is_read(sink):
    message = EmailMessage()
    message["From"] = "Jörg <jorg@example.com>"
    message["To"] = "Ånn <ann@example.org>"
    message["Subject"] = "Grüße"
    message.set_content("Hallo")
    raw = message.as_bytes(policy=message.policy.clone(utf8=True))  # as an SMTPUTF8 client writes it
    assert "Jörg".encode() in raw

    fields = message_fields(raw, ["ann@example.org"])

    assert (fields["from_email"], fields["to"], fields["subject"]) == (
        "Jörg <jorg@example.com>",
        ["Ånn <ann@example.org>"],
        "Grüße",
    )
    _stored(fields)


def test_envelope_recipients_that_to_or_cc_name_are_not_bcc():
    message = EmailMessage()
    message["From"] = "shop@example.com"
    message["To"] = "Ann <Ann@Example.org>"
    message["Cc"] = "carl@example.org"
    message.set_content("Hi")
    envelope = ["ann@example.org", "CARL@example.org", "dora@example.net", "Dora@Example.net"]

    fields = message_fields(message.as_bytes(), envelope)

    assert fields["bcc"] == ["dora@example.net"]


def test_trace_headers_of_relays_are_dropped_quietly():
    message = EmailMessage()
    message["Received"] = "from relay.example.net by mx.example.com; Fri, 4 Dec 2026 10:00:00 +0000"
    message["Return-Path"] = "<bounce@example.com>"
    message["DKIM-Signature"] = "v=1; a=rsa-sha256; d=example.com; s=s1; b=abc"
    message["ARC-Seal"] = "i=1; a=rsa-sha256; cv=none; d=example.com; s=s1; b=abc"
    message["Authentication-Results"] = "mx.example.com; spf=pass"
    message["From"] = "shop@example.com"
    message["To"] = "ann@example.org"
    message["Subject"] = "Hi"
    message["In-Reply-To"] = "<order-42@example.com>"
    message.set_content("Hi")

    fields = message_fields(message.as_bytes(), ["ann@example.org"])

    assert fields["headers"] == {"In-Reply-To": "<order-42@example.com>"}
    _stored(fields)


def test_an_attached_message_is_an_attachment_not_the_body():
    forwarded = EmailMessage()
    forwarded["From"] = "ann@example.org"
    forwarded["Subject"] = "Original"
    forwarded.set_content("The original text.")
    message = EmailMessage()
    message["From"] = "shop@example.com"
    message["To"] = "ann@example.org"
    message["Subject"] = "Fwd: Original"
    message.set_content("See the attached message.")
    message.add_attachment(forwarded, filename="original.eml")

    fields = message_fields(message.as_bytes(), ["ann@example.org"])

    assert fields["text"] == "See the attached message.\n"
    [(filename, content, content_type, _)] = _files(fields)
    assert (filename, content_type) == ("original.eml", "message/rfc822")
    assert b"The original text." in content
    _stored(fields)


def _message(*, sender: str | None = "shop@example.com", body: str | None = "Hi", **headers: str) -> bytes:
    message = EmailMessage()
    if sender:
        message["From"] = sender
    message["To"] = "ann@example.org"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    if body is not None:
        message.set_content(body)
    return message.as_bytes()


def _nested(levels: int) -> bytes:
    part = MIMEImage(PNG, "png")
    for _ in range(levels):
        outer = EmailMessage()
        outer.make_mixed()
        outer.attach(part)
        part = outer
    part["From"] = "shop@example.com"
    return part.as_bytes()


def _many_parts(count: int) -> bytes:
    message = EmailMessage()
    message["From"] = "shop@example.com"
    message.set_content("Hi")
    for number in range(count):
        message.add_attachment(b"x", "application", "octet-stream", filename=f"{number}.bin")
    return message.as_bytes()


UNPARSABLE = [
    # (what, message, why)
    ("no From", _message(sender=None), "no From"),
    ("two addresses in From", _message(sender="a@example.com, b@example.com"), "From names more than one"),
    # Python's header parser raises AttributeError for this From (and refuses to write it: hence replace()).
    ("a group in a group", _message().replace(b"shop@", b"a: b: shop@").replace(b".com\n", b".com;;\n", 1), "cannot"),
    ("no body and no attachment", _message(body=None), "no text, html or attachment"),
    ("an unknown charset", _message().replace(b'charset="utf-8"', b"charset=klingon"), "cannot be decoded"),
    ("parts nested too deep", _nested(MAX_DEPTH + 1), f"more than {MAX_DEPTH} deep"),
    ("too many parts", _many_parts(MAX_PARTS), f"more than {MAX_PARTS} MIME parts"),
]


@pytest.mark.parametrize(("what", "message", "why"), UNPARSABLE, ids=[case[0] for case in UNPARSABLE])
def test_an_unreadable_message_is_refused_saying_why(what, message, why):
    with pytest.raises(UnparsableMessage, match=why):
        message_fields(message, ["ann@example.org"])


def test_parts_nested_as_deep_as_allowed_are_read():
    fields = message_fields(_nested(MAX_DEPTH), ["ann@example.org"])

    assert _files(fields) == [("part-1.png", PNG, "image/png", None)]


def _deeply_nested(levels: int) -> bytes:
    # Python's generator recurses once per level: built by repeating one level's lines, as an attacker would.
    nesting = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (n, n) for n in range(levels))
    return b"From: shop@example.com\r\n" + nesting + b"Content-Type: text/plain\r\n\r\nHi\r\n"


def _parts(count: int) -> bytes:
    part = b"--b\r\n\r\nx\r\n"
    return b"From: shop@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" + part * count + b"--b--\r\n"


def _addresses(*, to: int, cc: int) -> bytes:
    named = b", ".join(b"=?utf-8?q?J=C3=B6rg?= <j%d@example.org>" % n for n in range(to))
    bare = b", ".join(b"c%d@example.org" % n for n in range(cc))
    return b"From: shop@example.com\r\nTo: " + named + b"\r\nCc: " + bare + b"\r\n\r\nHi"


HOSTILE = [
    # (what, a message of about 5 MB, why it is refused)
    ("100,000 nested multiparts", _deeply_nested(100_000), "more than"),
    ("60,000 nested multiparts, under the line bound", _deeply_nested(60_000), f"more than {MAX_DEPTH} deep"),
    ("60,000 parts", _parts(60_000), f"more than {MAX_PARTS} MIME parts"),
    ("a 5 MB header line", b"From: shop@example.com\r\nX-Long: " + b"a" * 5_000_000 + b"\r\n\r\nHi", "longer than"),
    ("a 5 MB To", b"From: shop@example.com\r\nTo: " + b"a@example.org, " * 330_000 + b"\r\n\r\nHi", "longer than"),
    ("To and Cc of 1,700 addresses", _addresses(to=700, cc=1000), "address headers are longer"),
    ("150,000 headers", b"From: shop@example.com\r\n" + b"X-A: b\r\n" * 150_000 + b"\r\nHi", "header fields"),
    ("5 MB of empty lines", b"From: shop@example.com\r\n\r\n" + b"\r\n" * 2_500_000, "lines"),
    ("parentheses nested 10,000 deep", b"From: " + b"(" * 10_000 + b"\r\n\r\nHi", "parentheses"),
]


@pytest.mark.parametrize(("what", "message", "why"), HOSTILE, ids=[case[0] for case in HOSTILE])
def test_a_hostile_message_is_refused_in_milliseconds(what, message, why):
    start = time.perf_counter()
    with pytest.raises(UnparsableMessage, match=why):
        message_fields(message, ["ann@example.org"])
    assert time.perf_counter() - start < BOUND


def test_a_message_at_every_bound_is_read_in_well_under_a_second():
    nesting = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (n, n) for n in range(MAX_DEPTH)
    )
    lines = MAX_LINES - nesting.count(b"\n") - 10
    message = b"From: shop@example.com\r\nSubject: Hi\r\n" + nesting + b"\r\n" + b"x\r\n" * lines

    start = time.perf_counter()
    fields = message_fields(message, ["ann@example.org"])

    assert time.perf_counter() - start < 2 * BOUND
    assert fields["text"].split() == ["x"] * lines


def test_a_large_message_is_read_in_well_under_a_second():
    attachment = os.urandom(6 * 1024 * 1024)  # about 8 MB once base64-encoded
    message = EmailMessage()
    message["From"] = "shop@example.com"
    message["To"] = "ann@example.org"
    message["Subject"] = "Backup"
    message.set_content("Attached.")
    message.add_attachment(attachment, "application", "octet-stream", filename="backup.bin")
    raw = message.as_bytes()

    start = time.perf_counter()
    fields = message_fields(raw, ["ann@example.org"])

    assert time.perf_counter() - start < 2 * BOUND
    assert base64.b64decode(fields["attachments"][0]["content"]) == attachment
