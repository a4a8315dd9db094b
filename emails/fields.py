"""Serializer fields for what clients send: strict strings, addresses, header maps."""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import mimetypes
import re
from collections.abc import Mapping
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.utils import getaddresses, parseaddr
from functools import cached_property

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.mail.message import ADDRESS_HEADERS, forbid_multi_line_headers, sanitize_address
from django.core.validators import slug_re, validate_email
from django.utils import timezone
from django.utils.encoding import punycode
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from providers.smtp import envelope_address

HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 field name: printable ASCII, no colon (fullmatch)
MAX_HEADER_NAME_LENGTH = 100
MAX_HEADERS = 50
# Set through their own fields, or by us: not through `headers`.
RESERVED_HEADERS = {
    "from", "to", "cc", "bcc", "reply-to", "subject", "content-type",
    "content-transfer-encoding", "mime-version",
}  # fmt: skip
# Set only by a relay (trace fields), a signer, this service, or as instructions to a provider: from a client
# they would forge a message's history or authentication, or steer the provider's account.
TRUSTED_HEADERS = {
    "received", "received-spf", "return-path", "dkim-signature", "domainkey-signature", "authentication-results",
    "x-mailservice-id", "x-smtpapi", "x-msys-api",
}  # fmt: skip
TRUSTED_HEADER_PREFIXES = ("arc-", "x-mailgun-", "x-pm-", "x-ses-", "x-mc-", "x-mj-", "x-mailin-")

MAX_ADDRESS_LENGTH = 400
MAX_TAG_LENGTH = 100
# Python's address parsers recurse once per nested '(' (a comment): deeper nesting is refused before they run.
MAX_COMMENT_NESTING = 10


# Anything Python's email package may take for a line break (not only CR and LF), and NUL.
LINE_BREAKING = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
# Lone surrogates cannot be encoded as UTF-8 (JSON's \ud800 escapes can bring them in).
SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_line_breaks(value: str) -> None:
    if LINE_BREAKING.search(value):
        raise serializers.ValidationError("Must not contain CR, LF or other control characters.")


class StrictCharField(serializers.CharField):
    """A string and only a string: 42 or true is a client bug, not a subject. Its length is checked before
    anything else reads it."""

    default_error_messages = {"invalid": "Must be a string."}

    def __init__(self, *, single_line: bool = False, **kwargs) -> None:
        self.single_line = single_line
        super().__init__(**kwargs)
        # Checked below with one regex: DRF's validator calls ord() on every character, which costs
        # more than all the rest of validating an email with a few KB of text.
        self.validators = [v for v in self.validators if not isinstance(v, ProhibitSurrogateCharactersValidator)]

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        if self.max_length is not None and len(data) > self.max_length:
            # DRF checks it last, after this method and any parsing a subclass does.
            self.fail("max_length", max_length=self.max_length)
        if self.single_line:
            _refuse_line_breaks(data)
        elif "\x00" in data:
            raise serializers.ValidationError("Must not contain NUL characters.")  # PostgreSQL cannot store them
        if SURROGATE.search(data):
            raise serializers.ValidationError("Must not contain surrogate characters.")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """true or false only: DRF also takes "yes", "on", 1 and "0", which a schema of type boolean refuses."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


# Any text but NUL (StrictCharField refuses NUL: PostgreSQL can neither store nor compare it).
NO_NUL = r"^[^\x00]*$"


class NulFreeTextField(StrictCharField):
    """A StrictCharField of free text (not single-line), whose schema states what it refuses: longer than
    max_length, or holding NUL (emails.schema.NulFreeTextFieldExtension)."""


def shown_name(name: str) -> str:
    """A client's key as an error names it: as sent, escaped when it holds what JSON output or PostgreSQL
    cannot carry (NUL, lone surrogates)."""
    return name if name.isprintable() else name.encode("unicode_escape").decode()


UNKNOWN_NAMES_SHOWN = 20
UNKNOWN_NAME_SHOWN_LENGTH = 100


def api_names(fields: dict, **renamed: str) -> dict:
    """A serializer's fields with some exposed under another name: `from` is a Python keyword, so the field
    is declared as from_email and exposed with api_names(fields, from_email="from")."""
    return {renamed.get(name, name): field for name, field in fields.items()}


def unknown_field_errors(data: Mapping, known: frozenset[str], message: str = "Unknown field.") -> dict[str, list[str]]:
    """Each key of `data` that is not in `known`, named, with `message`; empty when there is none. At most
    UNKNOWN_NAMES_SHOWN, each cut to UNKNOWN_NAME_SHOWN_LENGTH: an error never echoes a body's worth of names."""
    unknown = sorted(set(data) - known)
    errors = {shown_name(name[:UNKNOWN_NAME_SHOWN_LENGTH]): [message] for name in unknown[:UNKNOWN_NAMES_SHOWN]}
    if len(unknown) > UNKNOWN_NAMES_SHOWN:
        errors["…"] = [f"And {len(unknown) - UNKNOWN_NAMES_SHOWN} more unknown."]
    return errors


class RefusesUnknownFields:
    """For a Serializer: a key it has no field for is an error naming it (DRF drops such keys silently, so a
    misspelt or unsupported field would be lost without a word)."""

    unknown_field_message = "Unknown field."

    @cached_property
    def _field_names(self) -> frozenset[str]:
        return frozenset(self.fields)

    def to_internal_value(self, data):
        unknown = (
            unknown_field_errors(data, self._field_names, self.unknown_field_message)
            if isinstance(data, Mapping)
            else {}
        )
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if unknown and isinstance(exc.detail, dict):
                raise serializers.ValidationError({**exc.detail, **unknown}) from None
            raise
        if unknown:
            raise serializers.ValidationError(unknown)
        return value


class AnyCaseChoiceField(serializers.ChoiceField):
    """One of `choices` (upper-case strings), in any case: `sent` is SENT. Anything else is refused with the
    list of choices."""

    def to_internal_value(self, data):
        if isinstance(data, str) and data.isascii() and data.upper() in self.choices:
            return data.upper()
        shown = data[:50] if isinstance(data, str) else data
        raise serializers.ValidationError(f"{shown!r} is not one of {', '.join(self.choices)} (in any case).")


class BoundedListField(serializers.ListField):
    """A ListField whose max_length is checked before its items are validated (DRF checks it after)."""

    def to_internal_value(self, data):
        if self.max_length is not None and isinstance(data, list) and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


# The common shapes, "addr" and "Plain Name <addr>", which need no RFC 5322 parser (a tenth of its time).
# Each pattern is one run of one character class per part, with a fixed character between parts: no two
# quantifiers can take the same character, so a match or a miss costs time linear in the length.
_PLAIN_ADDR_SPEC = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _-]*")


def _plain(value: str) -> tuple[str, str] | None:
    """(name, addr) for 'addr' (name '') or 'Plain Name <addr>'; None for any other shape."""
    if value.endswith(">"):
        name, bracket, addr = value[:-1].rpartition("<")
        if bracket and name.endswith(" ") and _PLAIN_ADDR_SPEC.fullmatch(addr):
            name = name.rstrip(" ")
            if _PLAIN_NAME.fullmatch(name):
                return name, addr
        return None
    return ("", value) if _PLAIN_ADDR_SPEC.fullmatch(value) else None


def _too_nested(value: str) -> bool:
    """Whether '(' nest deeper than MAX_COMMENT_NESTING in value (counting those in quotes too: never less
    deep than the parsers see)."""
    if value.count("(") <= MAX_COMMENT_NESTING:
        return False
    depth = 0
    for char in value:
        if char == "(":
            depth += 1
            if depth > MAX_COMMENT_NESTING:
                return True
        elif char == ")" and depth:
            depth -= 1
    return False


def _refuse_unsendable(address: str, addr: str) -> None:
    """Refuses an address (addr its bare form) that the SMTP backend could not write: as Django's message()
    writes an address header (getaddresses, then sanitize_address for each) and as providers.smtp takes the
    envelope address. Without this such an email would be accepted, then fail at every attempt."""
    if not addr.rpartition("@")[0].isascii():
        # It needs SMTPUTF8; sanitize_address would send the local part as an encoded word: another address.
        raise serializers.ValidationError(f"{address!r}: non-ASCII characters before the '@' cannot be sent.")
    encoding = settings.DEFAULT_CHARSET
    try:
        envelope_address(address, encoding)
        if not address.isascii():  # message() writes an ASCII address header as it is (forbid_multi_line_headers)
            for pair in getaddresses((address,)):
                sanitize_address(pair, encoding)
    except (ValueError, IndexError, HeaderParseError):  # a UnicodeError (IDNA) and BadHeaderError are ValueErrors
        raise serializers.ValidationError(f"{address!r} cannot be written in a message header.") from None


def normalize_address(value: str) -> str:
    """'addr' or 'Name <addr>' → the same, normalised; raises ValidationError. The length is checked before
    any parsing, and what is returned can be sent (written as a header and as an envelope address)."""
    if len(value) > MAX_ADDRESS_LENGTH:
        raise serializers.ValidationError(f"An address has at most {MAX_ADDRESS_LENGTH} characters.")
    plain = _plain(value)
    if plain:
        name, addr = plain
        try:
            validate_email(addr)
        except DjangoValidationError:
            raise serializers.ValidationError(f"{value!r} is not a valid email address.") from None
        # Plain ASCII throughout: writable as it is (envelope_address and sanitize_address take it unchanged).
        return f"{name} <{addr}>" if name else addr
    _refuse_line_breaks(value)
    if _too_nested(value):
        raise serializers.ValidationError(f"At most {MAX_COMMENT_NESTING} nested parentheses in an address.")
    parsed = getaddresses([value])
    if len(parsed) != 1 or not parsed[0][1]:
        raise serializers.ValidationError(f"Enter one address, as 'addr' or 'Name <addr>', not {value!r}.")
    name, addr = parsed[0]
    try:
        validate_email(addr)
    except DjangoValidationError:
        raise serializers.ValidationError(f"{value!r} is not a valid email address.") from None
    if addr not in value:
        # Old parsers can read 'a@x.org)<b@y.org>' as b@y.org: refuse anything ambiguous.
        raise serializers.ValidationError(f"{value!r} is not a valid email address.")
    try:
        normalized = str(Address(display_name=name, addr_spec=addr)) if name else addr
    except (ValueError, IndexError, HeaderParseError):
        raise serializers.ValidationError(f"{value!r} is not a valid email address.") from None
    _refuse_unsendable(normalized, addr)
    return normalized


def bare_address(address: str) -> str:
    """'Name <addr>' or 'addr' → addr."""
    plain = _plain(address)
    return plain[1] if plain else parseaddr(address)[1]


_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def canonical_mailbox(address: str) -> str:
    """A bare address as the SMTP envelope carries it, the form in which addresses are compared (recipients,
    suppressions, a provider's event): lower-case, an international domain in punycode (IDNA 2003, as
    Django encodes the envelope, so full-width letters become ASCII ones), a needlessly quoted local part
    unquoted. Otherwise '"user"@example.com', or user@example.com written with a full-width e, would slip
    past a suppression of user@example.com, and a provider's bounce for user@xn--bcher-kva.de would match
    no email. Callers bound the address's length first."""
    local, _, domain = address.strip().rpartition("@")
    local, domain = local.lower(), domain.lower().removesuffix(".")
    if len(local) > 2 and local[0] == local[-1] == '"' and _DOT_ATOM.fullmatch(local[1:-1]):
        local = local[1:-1]
    if not domain.isascii():
        with contextlib.suppress(UnicodeError):  # no ASCII form: compared as it is
            domain = punycode(domain)
    return f"{local}@{domain}" if local else domain


class AddressField(StrictCharField):
    def __init__(self, **kwargs) -> None:
        super().__init__(max_length=MAX_ADDRESS_LENGTH, **kwargs)

    def to_internal_value(self, data):
        return normalize_address(super().to_internal_value(data))


class AddressListField(BoundedListField):
    """A list of addresses (at most 50); a single string is taken as a list of one."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("max_length", 50)
        super().__init__(child=AddressField(), **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, str):
            data = [data]
        return super().to_internal_value(data)


@extend_schema_field(
    {"type": "object", "maxProperties": MAX_HEADERS, "additionalProperties": {"type": "string", "maxLength": 998}}
)
class HeadersField(serializers.DictField):
    """Extra headers: names checked (count, length, shape, who may set them) before any value is read."""

    def __init__(self, **kwargs) -> None:
        super().__init__(child=StrictCharField(single_line=True, max_length=998, allow_blank=True), **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, dict):
            if len(data) > MAX_HEADERS:
                raise serializers.ValidationError(f"At most {MAX_HEADERS} headers.")
            for name in data:
                _check_header_name(name)
        headers = super().to_internal_value(data)
        for name, value in headers.items():
            if name.lower() in ADDRESS_HEADERS:
                headers[name] = _address_header(name, value)
        return headers


def _check_header_name(name: str) -> None:
    if len(name) > MAX_HEADER_NAME_LENGTH:
        raise serializers.ValidationError(f"A header name has at most {MAX_HEADER_NAME_LENGTH} characters.")
    if not HEADER_NAME.fullmatch(name):
        raise serializers.ValidationError(f"{name!r} is not a valid header name.")
    lower = name.lower()
    if lower in RESERVED_HEADERS:
        raise serializers.ValidationError(f"{name!r} cannot be set through headers; use its own field.")
    if lower in TRUSTED_HEADERS or lower.startswith(TRUSTED_HEADER_PREFIXES):
        raise serializers.ValidationError(
            f"{name!r} is set by relays, signers, this service or its providers, not through headers."
        )


def _address_header(name: str, value: str) -> str:
    """The value of an address header that has no field of its own (Sender, Resent-*): Sender one normalised
    address (it is checked against the key's senders), the others any addresses the message can carry."""
    try:
        if name.lower() in ("sender", "resent-sender"):
            return normalize_address(value)
        if _too_nested(value):
            raise serializers.ValidationError(f"At most {MAX_COMMENT_NESTING} nested parentheses in an address.")
        for _, addr in getaddresses((value,)):
            _refuse_unsendable(addr, addr)
        forbid_multi_line_headers(name, value, settings.DEFAULT_CHARSET)
    except serializers.ValidationError as exc:
        raise serializers.ValidationError([f"{name}: {message}" for message in exc.detail]) from None
    except ValueError:
        raise serializers.ValidationError(f"{name}: {value!r} cannot be written in a message header.") from None
    return value


@extend_schema_field(
    {"type": "object", "maxProperties": 50, "additionalProperties": {"type": "string", "maxLength": 1000}}
)
class MetadataField(serializers.DictField):
    def __init__(self, **kwargs) -> None:
        super().__init__(child=StrictCharField(max_length=1000, allow_blank=True), **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, dict):  # keys checked before any value is read
            if len(data) > 50:
                raise serializers.ValidationError("At most 50 keys.")
            for key in data:
                if not key or len(key) > 100 or LINE_BREAKING.search(key) or SURROGATE.search(key):
                    raise serializers.ValidationError(
                        f"{key[:100]!r} is not a valid key: 1 to 100 printable characters."
                    )
        return super().to_internal_value(data)


class UtcDateTimeField(serializers.DateTimeField):
    """A time shown in UTC, as every time in this API: without DRF's lookup of the request's current time
    zone (Django's thread-local), which costs more than formatting the time."""

    def __init__(self, **kwargs) -> None:
        super().__init__(default_timezone=datetime.UTC, **kwargs)


class BoundedDateTimeField(serializers.DateTimeField):
    """An ISO 8601 time with its time zone (or offset), its length checked before it is parsed. A time without
    one is refused: read in the server's zone it could be hours off what the client meant."""

    MAX_LENGTH = 64

    def to_internal_value(self, value):
        if isinstance(value, str) and len(value) > self.MAX_LENGTH:
            raise serializers.ValidationError(f"An ISO 8601 time has at most {self.MAX_LENGTH} characters.")
        return super().to_internal_value(value)

    def enforce_timezone(self, value: datetime.datetime) -> datetime.datetime:
        if timezone.is_naive(value):
            raise serializers.ValidationError(
                "Give a time zone: 2030-01-31T09:00:00Z (UTC), or an offset such as 2030-01-31T09:00:00+01:00."
            )
        return super().enforce_timezone(value)


@extend_schema_field({"type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[-a-zA-Z0-9_]+$"})
class TemplateNameField(StrictCharField):
    """A stored template's name: a slug, as the admin stores them."""

    def __init__(self, **kwargs) -> None:
        super().__init__(single_line=True, max_length=100, **kwargs)

    def to_internal_value(self, data):
        name = super().to_internal_value(data)
        if not slug_re.match(name):
            raise serializers.ValidationError(
                f"{name!r} is not a template name: names are slugs (letters, digits, hyphens and underscores)."
            )
        return name


class ParsedJson(serializers.JSONField):
    """Any JSON value, from a body our JSON parser has read already: DRF's JSONField serialises each
    value again to check that it is JSON (for form input), 500 times for a batch."""

    def to_internal_value(self, data):
        return data


CONTENT_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+$")
# What an html body can refer to as cid:<content_id> and a Content-ID header carry as <content_id>, unquoted
# and unescaped: no spaces, brackets, quotes, nor the characters a URL gives a meaning (% # ? /).
CONTENT_ID = re.compile(r"[A-Za-z0-9._@+=~-]+")
MAX_CONTENT_ID_LENGTH = 128


class AttachmentSerializer(RefusesUnknownFields, serializers.Serializer):
    """A file: attached, or shown inside the html when it has a `content_id`."""

    filename = StrictCharField(single_line=True, max_length=255, help_text="A file name, without a path.")
    content = StrictCharField(trim_whitespace=False, help_text="The file, base64-encoded.")
    content_type = StrictCharField(
        single_line=True,
        max_length=255,
        required=False,
        help_text="A MIME type such as `application/pdf`; guessed from the file name when left out.",
    )
    content_id = StrictCharField(
        single_line=True,
        max_length=MAX_CONTENT_ID_LENGTH,
        required=False,
        help_text="Makes the file an inline part, shown where the html refers to it as `cid:<content_id>` "
        '(`<img src="cid:logo.png">`). Up to 128 letters, digits and `. _ @ + = ~ -`, without `cid:` or `<>`; '
        "each one once per email.",
    )

    def validate_filename(self, value: str) -> str:
        if "/" in value or "\\" in value:
            raise serializers.ValidationError("A file name, without a path.")
        return value

    def validate_content(self, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise serializers.ValidationError("Must be base64.") from None
        return value

    def validate_content_id(self, value: str) -> str:
        if not CONTENT_ID.fullmatch(value):
            raise serializers.ValidationError(
                f"{value!r} is not a content id: letters, digits and . _ @ + = ~ - only (the html refers to it "
                "as cid:<content_id>; give it without 'cid:' or <>)."
            )
        return value

    def validate_content_type(self, value: str) -> str:
        if not CONTENT_TYPE.match(value):
            raise serializers.ValidationError(f"{value!r} is not a MIME type like 'application/pdf'.")
        return value

    def validate(self, attrs):
        if "content_type" not in attrs:
            attrs["content_type"] = mimetypes.guess_type(attrs["filename"])[0] or "application/octet-stream"
        return attrs


def attachment_size(attachment: dict) -> int:
    """Decoded size in bytes, from the base64 length (no second decode)."""
    content = attachment["content"]
    return len(content) * 3 // 4 - content[-2:].count("=")
