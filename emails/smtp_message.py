"""A message as an SMTP client submits it (RFC 5322 bytes and the envelope's recipients), read into the fields
the accepting service takes: the SMTP door's parser.

The standard library's `email` package parses; this module bounds what it is given first (size, lines, and,
as the parser reads them, parts, nesting and headers), so a hostile message is refused before it costs more
than a linear pass over its bytes, and maps the parsed tree onto an email's fields.
"""

from __future__ import annotations

import base64
import functools
import mimetypes
import re
from email.errors import HeaderParseError, InvalidBase64LengthDefect, MessageError
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP, EmailPolicy
from typing import Any

from django.conf import settings

from emails.fields import LINE_BREAKING, canonical_mailbox

# Before parsing: the feed parser tests each line against the boundary of every multipart around it, so
# lines times nesting is its cost. Far more lines than a message of base64 or quoted-printable parts has.
MAX_LINES = 200_000
# As the parser reads: no client nests parts this deep (a forwarded message with an inline image is 6).
MAX_DEPTH = 10
MAX_PARTS = 100
MAX_HEADER_FIELDS = 1000  # in the whole message, trace headers included
MAX_HEADER_BYTES = 32 * 1024  # one header, unfolded: 50 recipients with long, encoded display names fit
MAX_HEADERS_BYTES = 256 * 1024  # all headers of all parts: reading one costs time in proportion to its length
# All address headers (those of an attached message too), which cost several times more to read than others.
# The 50 recipients an email may have fit many times over.
MAX_ADDRESS_HEADERS_BYTES = 32 * 1024
# What the standard library parses as addresses (email.headerregistry), Bcc and Resent-Bcc included: unread
# here, they are still parsed when an attached message is written out.
ADDRESS_HEADERS = {
    "from", "sender", "reply-to", "to", "cc", "bcc",
    "resent-from", "resent-sender", "resent-to", "resent-cc", "resent-bcc",
}  # fmt: skip
# Parsed headers kept for the rest of a message's reading: up to a line (RFC 5322's 998 characters) each.
MAX_CACHED_HEADER_CHARS = 998
# The header parser recurses once per nested '(' (a comment) and fails near a few hundred.
MAX_PARENTHESES_NESTING = 50

# The headers that are fields of their own, or describe the MIME structure (the top's Content-* are the
# structure this module reads, not headers to write again).
FIELD_HEADERS = {"from", "to", "cc", "reply-to", "subject"}
STRUCTURAL_HEADERS = {
    "mime-version", "content-type", "content-transfer-encoding", "content-disposition", "content-id",
}  # fmt: skip
# Never passed on: the envelope says who else receives the message, and a Bcc header would show them.
BCC_HEADERS = {"bcc", "resent-bcc"}
# Trace fields and signatures that relays and signers add (RFC 5321 section 4.4, RFC 6376, RFC 8601, RFC 8617,
# RFC 9228): what a relay before us added is not the client's header, and the signatures would no longer hold.
# Dropped quietly.
TRACE_HEADERS = {
    "received", "x-received", "return-path", "delivered-to", "x-original-to", "received-spf",
    "authentication-results", "dkim-signature", "domainkey-signature",
    "arc-seal", "arc-message-signature", "arc-authentication-results",
}  # fmt: skip

# How an attached message is written back out: with CRLF, as it travelled.
_AS_SENT = SMTP
_FILENAME_PATH = re.compile(r"^.*[/\\]")


class UnparsableMessage(ValueError):
    """The message cannot be read into an email; str() says why (the SMTP door answers 554 with it)."""


class _Budget:
    """What one parse may still create, checked as the parser creates it."""

    def __init__(self) -> None:
        self.parts = 0
        self.header_fields = 0
        self.header_bytes = 0
        self.address_header_bytes = 0
        # Each header object the message's parts were asked for: reading a part (its type, charset, file name,
        # disposition) asks for the same few headers again and again, and each ask would parse again.
        self.parsed_headers: dict[tuple[str, str], Any] = {}

    def new_part(self, policy: EmailPolicy) -> _Part:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise UnparsableMessage(f"The message has more than {MAX_PARTS} MIME parts.")
        return _Part(policy=policy)

    def new_header(self, name: str, size: int) -> None:
        self.header_fields += 1
        if self.header_fields > MAX_HEADER_FIELDS:
            raise UnparsableMessage(f"The message has more than {MAX_HEADER_FIELDS} header fields.")
        if size > MAX_HEADER_BYTES:
            raise UnparsableMessage(f"A header field is longer than {MAX_HEADER_BYTES} bytes.")
        self.header_bytes += size
        if self.header_bytes > MAX_HEADERS_BYTES:
            raise UnparsableMessage(f"The message's header fields are longer than {MAX_HEADERS_BYTES} bytes.")
        if name.lower() in ADDRESS_HEADERS:
            self.address_header_bytes += size
            if self.address_header_bytes > MAX_ADDRESS_HEADERS_BYTES:
                limit = MAX_ADDRESS_HEADERS_BYTES
                raise UnparsableMessage(f"The message's address headers are longer than {limit} bytes.")


class _Part(EmailMessage):
    """A part that knows how deep it sits: the parser attaches each new part to the one it is in."""

    depth = 0

    def attach(self, payload: Any) -> None:
        payload.depth = self.depth + 1
        if payload.depth > MAX_DEPTH:
            raise UnparsableMessage(f"The message nests MIME parts more than {MAX_DEPTH} deep.")
        super().attach(payload)


class _BoundedPolicy(EmailPolicy):
    """policy.default, whose parts and headers are counted against `budget` as the parser reads them
    (through the hooks the email package offers: message_factory and header_source_parse)."""

    budget: _Budget | None = None

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        size = sum(map(len, sourcelines))
        self.budget.new_header(sourcelines[0].partition(":")[0].strip(), size)
        if size > MAX_PARENTHESES_NESTING and _parentheses_nesting("".join(sourcelines)) > MAX_PARENTHESES_NESTING:
            raise UnparsableMessage(f"A header field nests parentheses more than {MAX_PARENTHESES_NESTING} deep.")
        return super().header_source_parse(sourcelines)

    def header_fetch_parse(self, name: str, value: str) -> Any:
        # A header object depends on its name and raw value only, and is not changed once made. Only short ones
        # are kept (the MIME headers, read again and again): an object holds its parse tree, several times the
        # size of its text, and the long ones (address lists) are read once.
        if len(value) > MAX_CACHED_HEADER_CHARS:
            return super().header_fetch_parse(name, value)
        parsed = self.budget.parsed_headers.get((name, value))
        if parsed is None:
            parsed = self.budget.parsed_headers[name, value] = super().header_fetch_parse(name, value)
        return parsed


def _new_part(policy: _BoundedPolicy) -> _Part:
    return policy.budget.new_part(policy)


class _Headers(HeaderRegistry):
    """policy.default's header factory, making the class for a header name once: HeaderRegistry makes a new one
    for each header it parses, which costs more than parsing a short header."""

    # Bounded: the names come from clients. One registry, living as long as the process.
    @functools.lru_cache(maxsize=256)  # noqa: B019
    def __getitem__(self, name: str) -> type:
        return super().__getitem__(name)


_POLICY = _BoundedPolicy(message_factory=_new_part, header_factory=_Headers())  # otherwise policy.default


def _parentheses_nesting(value: str) -> int:
    """How deep '(' nest in value, counting those in quotes too (never less deep than the parser sees)."""
    depth = deepest = 0
    for char in value:
        if char == "(":
            depth += 1
            deepest = max(depth, deepest)
        elif char == ")" and depth:
            depth -= 1
    return deepest


def message_fields(message: bytes, envelope_recipients: list[str]) -> dict[str, Any]:
    """The fields of `message` as email_create() takes them: from_email, to, cc, bcc, reply_to (addresses as
    'Name <addr>' or 'addr', display names decoded), subject, text, html (decoded, "" when absent), headers
    (every other header the client wrote, decoded and unfolded; the first of a repeated one: the field is a
    map) and attachments (base64, an inline part with its content_id). bcc is the envelope recipients that
    To and Cc do not name; a Bcc header is never passed on, nor the trace headers of relays (TRACE_HEADERS).

    Raises UnparsableMessage, saying why: no From, no body and no attachment, over a bound, undecodable."""
    if len(message) > settings.MAIL_MAX_EMAIL_BYTES:
        raise UnparsableMessage(f"The message is over {settings.MAIL_MAX_EMAIL_BYTES} bytes.")
    if message.count(b"\n") > MAX_LINES:
        raise UnparsableMessage(f"The message has more than {MAX_LINES} lines.")
    try:
        parsed = BytesParser(policy=_POLICY.clone(budget=_Budget())).parsebytes(message)
        return _fields(parsed, envelope_recipients)
    except UnparsableMessage:
        raise
    except (HeaderParseError, MessageError, LookupError, UnicodeError, ValueError, IndexError, AttributeError) as exc:
        # IndexError and AttributeError too: the header parser raises them on some malformed input (a group in
        # a group). The type only: a parser's message may quote the message.
        raise UnparsableMessage(f"The message cannot be decoded ({type(exc).__name__}).") from exc


def _fields(message: EmailMessage, envelope_recipients: list[str]) -> dict[str, Any]:
    senders = _addresses(message, "From")
    if len(senders) != 1:
        raise UnparsableMessage("The message has no From address." if not senders else "From names more than one.")
    to, cc = _addresses(message, "To"), _addresses(message, "Cc")
    named = {canonical_mailbox(address.addr_spec) for address in (*to, *cc)}
    bcc = []
    for recipient in envelope_recipients:
        mailbox = canonical_mailbox(recipient)
        if mailbox not in named:
            named.add(mailbox)  # once, however often the envelope names it
            bcc.append(recipient)
    bodies, attachments = _contents(message)
    if not bodies["text"] and not bodies["html"] and not attachments:
        raise UnparsableMessage("The message has no text, html or attachment.")
    return {
        "from_email": str(senders[0]),
        "to": [str(address) for address in to],
        "cc": [str(address) for address in cc],
        "bcc": bcc,
        "reply_to": [str(address) for address in _addresses(message, "Reply-To")],
        "subject": _text(str(message.get("Subject", ""))),
        **bodies,
        "headers": _custom_headers(message),
        "attachments": attachments,
    }


def _addresses(message: EmailMessage, name: str) -> list[Address]:
    """The mailboxes of every `name` header (groups flattened), display names decoded."""
    return [
        # From its parts: given as one addr_spec, Address would parse it again, and raise for a bad one (which
        # the service's validation refuses, naming the field).
        Address(
            display_name=_text(address.display_name), username=_text(address.username), domain=_text(address.domain)
        )
        for header in message.get_all(name, [])
        for address in header.addresses
    ]


def _text(value: str) -> str:
    """value with the raw bytes the parser kept as surrogates (a header in UTF-8, as RFC 6532 allows) decoded
    as UTF-8; raises UnparsableMessage for bytes that are not UTF-8."""
    try:
        value.encode("utf-8")
        return value  # no raw bytes in it
    except UnicodeEncodeError:
        pass
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        raise UnparsableMessage("A header holds bytes that are neither an encoded word nor UTF-8.") from None


def _custom_headers(message: EmailMessage) -> dict[str, str]:
    headers: dict[str, str] = {}
    taken = set()
    for name in message:  # names only: a value is parsed when read
        lower = name.lower()
        if lower in taken or lower in FIELD_HEADERS or lower in STRUCTURAL_HEADERS:
            continue
        if lower in BCC_HEADERS or lower in TRACE_HEADERS:
            continue
        taken.add(lower)
        headers[name] = _text(str(message[name]))
    return headers


def _leaves(part: EmailMessage, in_related: bool = False):
    """(part, whether its parent is a multipart/related) for the parts that are not multiparts, in order; an
    attached message is one (its own parts are not this message's body)."""
    if part.get_content_maintype() != "multipart":
        yield part, in_related
    elif not part.is_multipart():
        raise UnparsableMessage(f"A {part.get_content_type()} part has no parts: its boundary is missing.")
    else:
        related = part.get_content_subtype() == "related"
        for child in part.iter_parts():
            yield from _leaves(child, related)


def _contents(message: EmailMessage) -> tuple[dict[str, str], list[dict[str, str]]]:
    """({"text": ..., "html": ...}, attachments): the first text/plain and text/html part that is not an
    attachment are the bodies; every other part is an attachment."""
    bodies = {"text": "", "html": ""}
    found: set[str] = set()
    attachments = []
    for number, (part, in_related) in enumerate(_leaves(message), start=1):
        kind = {"text/plain": "text", "text/html": "html"}.get(part.get_content_type())
        is_attachment = part.get_content_disposition() == "attachment" or part.get_filename() is not None
        if kind and kind not in found and not is_attachment:
            found.add(kind)
            bodies[kind] = _body(part)
        else:
            attachments.append(_attachment(part, number, in_related=in_related))
    return bodies, attachments


def _body(part: EmailMessage) -> str:
    """A text part decoded: its transfer encoding, then its charset (UTF-8 when it declares none and is not
    ASCII, as 8BITMIME clients send), with line ends as "\\n". An unknown charset raises LookupError."""
    content = _decoded(part)
    charset = part.get_content_charset() or ("us-ascii" if content.isascii() else "utf-8")
    if charset == "us-ascii" and not content.isascii():
        charset = "utf-8"
    return content.decode(charset, errors="replace").replace("\r\n", "\n")


def _decoded(part: EmailMessage) -> bytes:
    if part.get_content_maintype() == "message" and part.is_multipart():
        # An attached message (or a delivery report's blocks), parsed as messages: written out as it was sent.
        return b"".join(inner.as_bytes(policy=_AS_SENT) for inner in part.get_payload())
    content = part.get_payload(decode=True)
    if any(isinstance(defect, InvalidBase64LengthDefect) for defect in part.defects):
        raise UnparsableMessage(f"A {part.get_content_type()} part is not valid base64.")
    return content


def _attachment(part: EmailMessage, number: int, *, in_related: bool) -> dict[str, str]:
    """An attachment's fields; with its Content-ID as content_id when it is inline: a part of a
    multipart/related (whatever its disposition: Python's add_related() with a filename says "attachment"), or
    one whose disposition is not "attachment"."""
    content_type = part.get_content_type()
    attachment = {
        "filename": _filename(part, content_type, number),
        "content": base64.b64encode(_decoded(part)).decode("ascii"),
        "content_type": content_type,
    }
    content_id = str(part.get("Content-ID", "")).strip().removeprefix("<").removesuffix(">")
    if content_id and (in_related or part.get_content_disposition() != "attachment"):
        attachment["content_id"] = _text(content_id)
    return attachment


def _filename(part: EmailMessage, content_type: str, number: int) -> str:
    """The part's file name without a path, or one made from its number and type (an inline image often has
    a Content-ID but no name)."""
    name = LINE_BREAKING.sub("", _FILENAME_PATH.sub("", _text(part.get_filename() or "")))
    if not name:
        return f"part-{number}{mimetypes.guess_extension(content_type) or '.bin'}"
    if len(name) > 255:
        _, dot, extension = name.rpartition(".")
        name = name[: 255 - len(dot + extension)] + dot + extension if dot and len(extension) < 20 else name[:255]
    return name
