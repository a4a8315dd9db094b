"""What an email is, whatever door it comes in by: its fields validated from plain values (a JSON object's,
as POST /api/v1/emails takes it), with every bound the contract sets. Raises InvalidFields naming each
field; the doors translate their own formats into these fields first (emails.smtp_message, emails.postmark).

The fields are declared with DRF's serializer fields, a validation library here: the same declarations
document the API's schema."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from emails.drf_speedups import GivenFieldsOnly, validated
from emails.errors import InvalidFields
from emails.fields import (
    MAX_TAG_LENGTH,
    AddressField,
    AddressListField,
    AttachmentSerializer,
    BoundedDateTimeField,
    BoundedListField,
    HeadersField,
    MetadataField,
    StrictBooleanField,
    StrictCharField,
    TemplateNameField,
    api_names,
)


@extend_schema_serializer(component_name="EmailCreate")
class EmailFields(GivenFieldsOnly, serializers.Serializer):
    """An email to send: `from`, `to`, and `subject` with `text` and/or `html`, or a `template` that gives
    them. Any other field is a 400 naming it."""

    from_email = AddressField(
        source="from_email",
        help_text="`addr` or `Name <addr>`, at most 400 characters; one of the API key's senders when it has "
        "a list. Also the envelope sender.",
    )
    to = AddressListField(
        min_length=1,
        help_text="A list of addresses (or one, as a string); `to`, `cc` and `bcc` hold at most 50 together.",
    )
    cc = AddressListField(required=False, help_text="Addresses, as `to`.")
    bcc = AddressListField(required=False, help_text="Addresses, as `to`; not shown to the other recipients.")
    reply_to = AddressListField(required=False, help_text="At most 50 addresses.")
    subject = StrictCharField(
        single_line=True,
        max_length=998,
        required=False,
        help_text="One line, at most 998 characters. Required unless the template gives it.",
    )
    text = StrictCharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="The plain-text body. Give text, html or both, unless the template gives them.",
    )
    html = StrictCharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="The html body; it shows an inline attachment as `cid:<content_id>`.",
    )
    headers = HeadersField(
        required=False,
        help_text='Extra headers, at most 50: `{"name": "value"}`, a name of at most 100 characters, a value '
        "of at most 998 on one line. Not those with a field of their own (From, To, Cc, Bcc, Reply-To, Subject, "
        "Content-Type, ...), nor those only a relay, a signer, this service or a provider sets (Received, "
        "Received-SPF, Return-Path, DKIM-Signature, DomainKey-Signature, ARC-*, Authentication-Results, "
        "X-Mailservice-Id, X-SMTPAPI, X-MSYS-API, X-Mailgun-*, X-PM-*, X-SES-*, X-MC-*, X-MJ-*, X-Mailin-*). "
        "Message-ID, In-Reply-To, References, Date and Sender are yours to set.",
    )
    attachments = BoundedListField(
        child=AttachmentSerializer(),
        required=False,
        max_length=20,
        help_text="At most 20 files; their decoded size counts towards the email's 10 MB.",
    )
    template = TemplateNameField(
        required=False,
        help_text="A stored template's name (a slug: letters, digits, `-` and `_`), rendered with `context`. "
        "Fields given in the request win over the template's.",
    )
    context = serializers.DictField(
        required=False,
        help_text="The template's variables (only with `template`); escaped in html, not in subject and text.",
    )
    tags = BoundedListField(
        child=StrictCharField(single_line=True, max_length=MAX_TAG_LENGTH), required=False, max_length=20,
        help_text="At most 20, each one line of at most 100 characters; the list filters on one with `?tag=`.",
    )  # fmt: skip
    metadata = MetadataField(
        required=False,
        help_text="At most 50 keys (1 to 100 characters, one line) with string values of at most 1000 "
        "characters, returned as given.",
    )
    send_at = BoundedDateTimeField(
        required=False,
        allow_null=True,
        help_text="ISO 8601 with a time zone or offset (`2030-01-31T09:00:00Z`); the email stays PENDING "
        "until then. Null or absent: at once.",
    )
    message_stream = StrictCharField(
        single_line=True,
        max_length=MAX_TAG_LENGTH,
        required=False,
        help_text="A Postmark-style message stream (`outbound`, `broadcast`, ...), kept and shown as a tag is; one "
        "line of at most 100 characters.",
    )
    track_opens = StrictBooleanField(
        required=False,
        allow_null=True,
        help_text="Ask the provider to track opens; null or absent: the provider's default. Providers without "
        "tracking (SMTP, Amazon SES) send the email without it.",
    )
    track_clicks = StrictBooleanField(
        required=False, allow_null=True, help_text="Ask the provider to track link clicks, as `track_opens`."
    )

    def get_fields(self):
        return api_names(super().get_fields(), from_email="from")

    def validate(self, attrs):
        if "context" in attrs and not attrs.get("template"):
            raise serializers.ValidationError({"context": ["Only with a template: give `template` too."]})
        if not attrs.get("template"):  # else the template gives them (checked once rendered)
            if not attrs.get("subject"):
                raise serializers.ValidationError({"subject": ["This field is required (or give a template)."]})
            if not attrs.get("text") and not attrs.get("html"):
                message = "Give text, html, or both (or a template)."
                raise serializers.ValidationError({"text": [message], "html": [message]})
        count = sum(len(attrs.get(f, [])) for f in ("to", "cc", "bcc"))
        if count > settings.MAIL_MAX_RECIPIENTS:
            raise serializers.ValidationError(
                {"to": [f"At most {settings.MAIL_MAX_RECIPIENTS} recipients in to, cc and bcc together ({count})."]}
            )
        if "attachments" in attrs:
            content_ids = [a["content_id"] for a in attrs["attachments"] if "content_id" in a]
            if len(set(content_ids)) < len(content_ids):
                twice = sorted({i for i in content_ids if content_ids.count(i) > 1})
                message = f"Each content_id once per email: {', '.join(map(repr, twice))} is given more than once."
                raise serializers.ValidationError({"attachments": [message]})
        return attrs


def email_fields(data: Any) -> dict[str, Any]:
    """`data` (an email as POST /api/v1/emails takes it) validated: the keyword arguments of email_create().
    Raises InvalidFields naming each bad field, its messages as plain strings."""
    try:
        return validated(EmailFields, data)
    except ValidationError as exc:
        raise InvalidFields(_plain(exc.detail)) from None


def _plain(detail):
    """A ValidationError's detail with each ErrorDetail as the str it is, nested as DRF nests them."""
    if isinstance(detail, dict):
        return {name: _plain(value) for name, value in detail.items()}
    if isinstance(detail, list):
        return [_plain(value) for value in detail]
    return str(detail)
