"""Serializer fields for what clients send: strict strings, addresses, header maps."""

from __future__ import annotations

import base64
import binascii
import datetime
import mimetypes
import re
from email.headerregistry import Address
from email.utils import getaddresses, parseaddr

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 field name: printable ASCII, no colon
# Set through their own fields, or by us: not through `headers`.
RESERVED_HEADERS = {
    "from", "to", "cc", "bcc", "reply-to", "subject", "content-type",
    "content-transfer-encoding", "mime-version", "x-mailservice-id",
}  # fmt: skip


# Anything Python's email package may take for a line break (not only CR and LF), and NUL.
LINE_BREAKING = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
# Lone surrogates cannot be encoded as UTF-8 (JSON's \ud800 escapes can bring them in).
SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_line_breaks(value: str) -> None:
    if LINE_BREAKING.search(value):
        raise serializers.ValidationError("Must not contain CR, LF or other control characters.")


class StrictCharField(serializers.CharField):
    """A string and only a string: 42 or true is a client bug, not a subject."""

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
        if self.single_line:
            _refuse_line_breaks(data)
        elif "\x00" in data:
            raise serializers.ValidationError("Must not contain NUL characters.")  # PostgreSQL cannot store them
        if SURROGATE.search(data):
            raise serializers.ValidationError("Must not contain surrogate characters.")
        return super().to_internal_value(data)


# The common shapes, "addr" and "Plain Name <addr>", which need no RFC 5322 parser (a tenth of its time).
_PLAIN_ADDRESS = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
PLAIN = re.compile(
    rf"^(?:(?P<name>[A-Za-z0-9][A-Za-z0-9 _-]*?) +<(?P<inner>{_PLAIN_ADDRESS})>|(?P<bare>{_PLAIN_ADDRESS}))$"
)


def normalize_address(value: str) -> str:
    """'addr' or 'Name <addr>' → the same, normalised; raises ValidationError."""
    plain = PLAIN.match(value)
    if plain:
        addr = plain["inner"] or plain["bare"]
        try:
            validate_email(addr)
        except DjangoValidationError:
            raise serializers.ValidationError(f"{value!r} is not a valid email address.") from None
        return f"{plain['name']} <{addr}>" if plain["name"] else addr
    _refuse_line_breaks(value)
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
    return str(Address(display_name=name, addr_spec=addr)) if name else addr


def bare_address(address: str) -> str:
    """'Name <addr>' or 'addr' → addr."""
    plain = PLAIN.match(address)
    return (plain["inner"] or plain["bare"]) if plain else parseaddr(address)[1]


class AddressField(StrictCharField):
    def __init__(self, **kwargs) -> None:
        super().__init__(max_length=400, **kwargs)

    def to_internal_value(self, data):
        return normalize_address(super().to_internal_value(data))


class AddressListField(serializers.ListField):
    """A list of addresses; a single string is taken as a list of one."""

    def __init__(self, **kwargs) -> None:
        super().__init__(child=AddressField(), **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, str):
            data = [data]
        return super().to_internal_value(data)


class HeadersField(serializers.DictField):
    def __init__(self, **kwargs) -> None:
        super().__init__(child=StrictCharField(single_line=True, max_length=998, allow_blank=True), **kwargs)

    def to_internal_value(self, data):
        headers = super().to_internal_value(data)
        if len(headers) > 50:
            raise serializers.ValidationError("At most 50 headers.")
        for name in headers:
            if not HEADER_NAME.match(name):
                raise serializers.ValidationError(f"{name!r} is not a valid header name.")
            if name.lower() in RESERVED_HEADERS:
                raise serializers.ValidationError(f"{name!r} cannot be set through headers; use its own field.")
        return headers


class MetadataField(serializers.DictField):
    def __init__(self, **kwargs) -> None:
        super().__init__(child=StrictCharField(max_length=1000, allow_blank=True), **kwargs)

    def to_internal_value(self, data):
        metadata = super().to_internal_value(data)
        if len(metadata) > 50:
            raise serializers.ValidationError("At most 50 keys.")
        for key in metadata:
            if not key or len(key) > 100 or LINE_BREAKING.search(key):
                raise serializers.ValidationError(f"{key[:100]!r} is not a valid key: 1 to 100 printable characters.")
        return metadata


class UtcDateTimeField(serializers.DateTimeField):
    """A time shown in UTC, as every time in this API: without DRF's lookup of the request's current time
    zone (Django's thread-local), which costs more than formatting the time."""

    def __init__(self, **kwargs) -> None:
        super().__init__(default_timezone=datetime.UTC, **kwargs)


class ParsedJson(serializers.JSONField):
    """Any JSON value, from a body our JSON parser has read already: DRF's JSONField serialises each
    value again to check that it is JSON (for form input), 500 times for a batch."""

    def to_internal_value(self, data):
        return data


CONTENT_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+$")


class AttachmentSerializer(serializers.Serializer):
    """{filename, content (base64), content_type}: decoded once here to validate it, stored as given."""

    filename = StrictCharField(single_line=True, max_length=255)
    content = StrictCharField(trim_whitespace=False)
    content_type = StrictCharField(single_line=True, max_length=255, required=False)

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
