"""Our SMTP backend sends exactly what Django's sends (envelope and bytes), for less work."""

import random

import pytest
import time_machine
from django.core.mail import EmailMultiAlternatives, get_connection

from tests.sink import SmtpSink

LONG = "Your order 12345 has shipped and will arrive on Thursday between 9:00 and 12:00, weather permitting"
MESSAGES = {
    "plain": {"from_email": "shop@example.com", "to": ["alice@example.org"], "subject": "Hi", "body": "Hello."},
    "display names": {
        "from_email": "Shop Team <shop@example.com>",
        "to": ["Alice Smith <alice@example.org>", "bob@example.org"],
        "cc": ['"Doe, John" <john@example.net>'],
        "bcc": ["audit@example.com"],
        "reply_to": ["Help <help@example.com>"],
        "subject": "Your  order,  with   spaces",
        "body": "Thanks!",
    },
    "unicode": {
        "from_email": "Åsa Öberg <asa@example.com>",
        "to": ["Zoë <zoe@bücher.example>", "josé@example.org"],
        "subject": "Ünïcode ✓ résumé",
        "body": "Grüße ✓",
    },
    "long headers": {
        "from_email": "shop@example.com",
        "to": ["alice@example.org"],
        "subject": LONG,
        "body": "x " * 2000,
        "headers": {"X-Campaign": LONG, "X-Short": "a"},
    },
    "lines starting with periods": {
        "from_email": "shop@example.com",
        "to": ["alice@example.org"],
        "subject": "Dots",
        "body": ".hidden\n..two\n.\nlast line without a line break.",
    },
    "html and attachment": {
        "from_email": "shop@example.com",
        "to": ["alice@example.org"],
        "subject": "Invoice",
        "body": "See the attachment.",
        "html": "<p>See the <b>attachment</b>.</p>",
        "attachment": ("invoice.pdf", b"%PDF-1.4\n" + bytes(range(256)) * 20, "application/pdf"),
    },
}


def _send(backend: str, port: int, spec: dict):
    spec = dict(spec)
    html, attachment = spec.pop("html", None), spec.pop("attachment", None)
    headers = {"Message-ID": "<fixed@example.com>", **spec.pop("headers", {})}
    message = EmailMultiAlternatives(headers=headers, **spec)
    if html:
        message.attach_alternative(html, "text/html")
    if attachment:
        message.attach(*attachment)
    random.seed(7)  # the same multipart boundaries
    with get_connection(backend, host="127.0.0.1", port=port) as connection:
        assert connection.send_messages([message]) == 1


@pytest.mark.parametrize("spec", MESSAGES.values(), ids=MESSAGES.keys())
def test_it_sends_what_djangos_backend_sends(spec):
    sink = SmtpSink().start()
    try:
        with time_machine.travel("2026-11-23 08:00:00Z", tick=False):  # the same Date header
            _send("django.core.mail.backends.smtp.EmailBackend", sink.port, spec)
            _send("providers.smtp.EmailBackend", sink.port, spec)
        django, ours = sink.received
    finally:
        sink.stop()

    assert (ours.mail_from, ours.rcpt_tos) == (django.mail_from, django.rcpt_tos)
    assert ours.raw == django.raw
