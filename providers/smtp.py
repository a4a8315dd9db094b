"""Django's SMTP backend, sending the same bytes for less work.

Building a message costs more than sending it to a nearby server: a third of a worker's time went to
Python's header folding and to parsing each address again for the envelope. Both have a cheap answer
in the common case, and fall back to Django's own code for everything else.

Its connections also tell a connection lost after the message went out (MessageMaybeDelivered: the server
may have queued it) from one lost before.
"""

from __future__ import annotations

import re
import smtplib
from email._policybase import Compat32
from email.generator import BytesGenerator
from io import BytesIO

from django.conf import settings
from django.core.mail.backends import smtp
from django.core.mail.message import EmailMessage, sanitize_address

from providers.errors import MessageMaybeDelivered

# "addr" or "Display Name <addr>", all plain ASCII (no quotes, no encoded words, no IDN domain): the
# envelope address Django's sanitize_address and smtplib would extract from it is addr itself.
_ADDR = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
_PLAIN_ADDRESS = re.compile(rf"^(?:[A-Za-z0-9 ._-]* <(?P<inner>{_ADDR})>|(?P<bare>{_ADDR}))$")


class _ShortHeadersAsIs(Compat32):
    """compat32, the policy of Django's messages, minus the folding machinery for a header that is
    short printable ASCII: folding leaves such a header as it is (tests/providers/test_smtp.py)."""

    def _fold(self, name: str, value, sanitize: bool) -> str:
        if (
            isinstance(value, str)
            and self.max_line_length
            and len(name) + 2 + len(value) <= self.max_line_length
            and value.isascii()
            and value.isprintable()
        ):
            return f"{name}: {value}{self.linesep}"
        return super()._fold(name, value, sanitize)


_POLICY = _ShortHeadersAsIs(linesep="\r\n")


def message_bytes(email_message: EmailMessage) -> bytes:
    """What Django's backend sends: message().as_bytes(linesep="\\r\\n"), through the cheaper policy."""
    out = BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=_POLICY).flatten(email_message.message(), linesep="\r\n")
    return out.getvalue()


def envelope_address(address: str, encoding: str) -> str:
    """The address for MAIL FROM / RCPT TO, as Django's sanitize_address and smtplib make it."""
    plain = _PLAIN_ADDRESS.match(address)
    if plain:
        return plain["inner"] or plain["bare"]
    return sanitize_address(address, encoding)


_LINE_START_PERIOD = re.compile(rb"(?m)^\.")
_LINE_END = re.compile(r"\r\n|\n|\r(?!\n)")


def data_payload(msg: bytes | str) -> bytes:
    """What smtplib's data() sends after the 354: the message with a period doubled at the start of each
    line (RFC 5321 4.5.2), ending in CRLF, then the "." line. Bytes go as they are; a str is given CRLF
    line ends and must be ASCII (as smtplib does)."""
    if isinstance(msg, str):
        msg = _LINE_END.sub("\r\n", msg).encode("ascii")
    payload = _LINE_START_PERIOD.sub(b"..", msg)
    if not payload.endswith(b"\r\n"):
        payload += b"\r\n"
    return payload + b".\r\n"


class SMTPConnection(smtplib.SMTP):
    """smtplib.SMTP whose data() raises MessageMaybeDelivered when the connection fails while it awaits the
    reply to the message (after its final "."). A failure before, up to the 354 reply to DATA, stays an
    SMTPServerDisconnected: the server cannot have taken a message it has not wholly received."""

    def data(self, msg: bytes | str) -> tuple[int, bytes]:
        # smtplib.SMTP.data, through public methods only.
        code, reply = self.docmd("data")
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        self.send(data_payload(msg))
        try:
            return self.getreply()
        except smtplib.SMTPServerDisconnected as exc:  # getreply's wrapping of EOF, a reset or a timeout
            raise MessageMaybeDelivered(*exc.args) from exc


class SMTPSSLConnection(SMTPConnection, smtplib.SMTP_SSL):
    """smtplib.SMTP_SSL with SMTPConnection's data()."""


class EmailBackend(smtp.EmailBackend):
    @property
    def connection_class(self):
        return SMTPSSLConnection if self.use_ssl else SMTPConnection

    def _send(self, email_message: EmailMessage) -> bool:
        # Django's _send, with the two cheaper steps above.
        if not email_message.recipients():
            return False
        encoding = email_message.encoding or settings.DEFAULT_CHARSET
        from_email = envelope_address(email_message.from_email, encoding)
        recipients = [envelope_address(addr, encoding) for addr in email_message.recipients()]
        try:
            self.connection.sendmail(from_email, recipients, message_bytes(email_message))
        except smtplib.SMTPException:
            if not self.fail_silently:
                raise
            return False
        return True
